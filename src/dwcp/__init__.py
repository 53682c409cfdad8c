"""DWCP: distributed WAN control plane services and their monitoring."""

__version__ = "0.1.0"
