"""DWCP Manager: a site's object store, checksummed resumable transfers to peer sites, links, routing."""
