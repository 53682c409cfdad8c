"""ECVRF-EDWARDS25519-SHA512-TAI against RFC 9381 Appendix B.3 (Examples 16-18), byte for byte, with
the published intermediates (H, U = k*B, V = k*H) so a coincidentally right output cannot hide a
wrong construction; then the rejection paths and the simulator stand-in."""

from __future__ import annotations

import pytest

from dwcp.consensus.core.vrf import (
    EcVrf,
    EcVrfVerifier,
    MacVrf,
    MacVrfVerifier,
    ecvrf_prove,
    ecvrf_public_key,
    ecvrf_verify,
    encode_to_curve,
    mac_vrf_secret,
    proof_to_hash,
)

# (SK, PK, alpha, H, pi, beta) from RFC 9381 Appendix B.3.
VECTORS = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "91bbed02a99461df1ad4c6564a5f5d829d0b90cfc7903e7a5797bd658abf3318",
     "8657106690b5526245a92b003bb079ccd1a92130477671f6fc01ad16f26f723f26f8a57ccaed74ee1b190bed1f479d9727d2d0f9b0"
     "05a6e456a35d4fb0daab1268a1b0db10836d9826a528ca76567805",
     "90cf1df3b703cce59e2a35b925d411164068269d7b2d29f3301c03dd757876ff66b71dda49d2de59d03450451af026798e8f81cd2e"
     "333de5cdf4f3e140fdd8ae"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "5b659fc3d4e9263fd9a4ed1d022d75eaacc20df5e09f9ea937502396598dc551",
     "f3141cd382dc42909d19ec5110469e4feae18300e94f304590abdced48aed5933bf0864a62558b3ed7f2fea45c92a465301b3bbf5e"
     "3e54ddf2d935be3b67926da3ef39226bbc355bdc9850112c8f4b02",
     "eb4440665d3891d668e7e0fcaf587f1b4bd7fbfe99d0eb2211ccec90496310eb5e33821bc613efb94db5e5b54c70a848a0bef4553a"
     "41befc57663b56373a5031"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "bf4339376f5542811de615e3313d2b36f6f53c0acfebb482159711201192576a",
     "9bc0f79119cc5604bf02d23b4caede71393cedfbb191434dd016d30177ccbf8096bb474e53895c362d8628ee9f9ea3c0e52c7a5c69"
     "1b6c18c9979866568add7a2d41b00b05081ed0f58ee5e31b3a970e",
     "645427e5d00c62a23fb703732fa5d892940935942101e456ecca7bb217c61c452118fec1219202a0edcf038bb6373241578be7217b"
     "a85a2687f7a0310b2df19f"),
]
# Example 16's nonce points U = k*B and V = k*H.
EXAMPLE16_U = "aef27c725be964c6a9bf4c45ca8e35df258c1878b838f37d9975523f09034071"
EXAMPLE16_V = "5016572f71466c646c119443455d6cb9b952f07d060ec8286d678615d55f954f"
EXAMPLE16_K = "8a49edbd1492a8ee09766befe50a7d563051bf3406cbffc20a88def030730f0f"


@pytest.mark.parametrize(("sk", "pk", "alpha", "h", "pi", "beta"), VECTORS, ids=["example16", "example17", "example18"])
def test_rfc9381_vector_is_reproduced_byte_for_byte(sk, pk, alpha, h, pi, beta):
    sk, alpha = bytes.fromhex(sk), bytes.fromhex(alpha)
    assert ecvrf_public_key(sk).hex() == pk
    assert encode_to_curve(bytes.fromhex(pk), alpha).hex() == h  # example 17 needs ctr = 1
    proof = ecvrf_prove(sk, alpha)
    assert proof.hex() == pi
    assert proof_to_hash(proof).hex() == beta
    assert ecvrf_verify(bytes.fromhex(pk), alpha, proof).hex() == beta


def test_example16_nonce_points_match_the_rfc():
    from nacl import bindings as sodium

    k = bytes.fromhex(EXAMPLE16_K)
    h = bytes.fromhex(VECTORS[0][3])
    assert sodium.crypto_scalarmult_ed25519_base_noclamp(k).hex() == EXAMPLE16_U
    assert sodium.crypto_scalarmult_ed25519_noclamp(k, h).hex() == EXAMPLE16_V


@pytest.mark.parametrize("octet", [0, 31, 32, 47, 48, 79])
def test_a_proof_with_one_flipped_bit_is_rejected(octet):
    sk, pk, alpha = bytes.fromhex(VECTORS[2][0]), bytes.fromhex(VECTORS[2][1]), bytes.fromhex(VECTORS[2][2])
    bad = bytearray(ecvrf_prove(sk, alpha))
    bad[octet] ^= 0x01
    assert ecvrf_verify(pk, alpha, bytes(bad)) is None


def test_a_proof_for_another_input_key_or_length_is_rejected():
    sk, pk = bytes.fromhex(VECTORS[0][0]), bytes.fromhex(VECTORS[0][1])
    proof = ecvrf_prove(sk, b"view 1")
    assert ecvrf_verify(pk, b"view 2", proof) is None  # a replayed proof: valid, for another input
    assert ecvrf_verify(bytes.fromhex(VECTORS[1][1]), b"view 1", proof) is None
    assert ecvrf_verify(pk, b"view 1", proof[:-1]) is None
    assert ecvrf_verify(pk, b"view 1", b"\xff" * 80) is None  # s >= L, Gamma not a point
    assert ecvrf_verify((1).to_bytes(32, "little"), b"", bytes(80)) is None  # small-order key


def test_prover_and_verifier_objects_agree_and_unknown_nodes_fail():
    prover = EcVrf(3, bytes.fromhex(VECTORS[1][0]))
    verifier = EcVrfVerifier({3: prover.public_key})
    proof, beta = prover.prove(b"x")
    assert verifier.verify(3, b"x", proof) == beta
    assert verifier.verify(4, b"x", proof) is None


def test_mac_stand_in_behaves_like_a_vrf_inside_the_simulation():
    secrets = {i: mac_vrf_secret(1, i) for i in range(3)}
    verifier = MacVrfVerifier(secrets)
    proof, beta = MacVrf(0, secrets[0]).prove(b"a")
    assert verifier.verify(0, b"a", proof) == beta
    assert verifier.verify(1, b"a", proof) is None  # another node's draw cannot be claimed
    assert verifier.verify(0, b"b", proof) is None  # nor replayed for another input
    assert MacVrf(0, secrets[0]).prove(b"a") == (proof, beta)
