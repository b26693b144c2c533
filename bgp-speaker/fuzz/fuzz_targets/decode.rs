//! Arbitrary bytes through framing, decoding (2- and 4-octet AS sessions) and re-encoding;
//! the invariants live in `trellis_bgp_speaker::wire::fuzz_decode_roundtrip`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    trellis_bgp_speaker::wire::fuzz_decode_roundtrip(data);
});
