//! ID3v2.4 tags that symphonia cannot read without panicking, found before its probe sees the
//! bytes. The probe looks for a tag anywhere it scans, and symphonia 0.5.5 reads the text
//! encoding restriction of a v2.4 extended header as `(r & 0x40) >> 5`, which is 2 when that
//! bit is set, and then reaches `unreachable!()` (a fuzzer's find). Such a tag is refused as
//! undecodable audio; the walk mirrors symphonia's reading of the extended header
//! (`read_id3v2p4_extended_header`) so that only the bytes it would panic on are refused.

use super::error::DecodeError;

/// Refuses `bytes` when an ID3v2.4 tag in it carries a text encoding restriction.
pub fn check(bytes: &[u8]) -> Result<(), DecodeError> {
    let starts = bytes.windows(3).enumerate().filter(|(_, w)| *w == b"ID3");
    for (at, _) in starts {
        if restriction_byte(bytes, at).is_some_and(|r| r & 0x40 != 0) {
            return Err(DecodeError::Undecodable(
                "an ID3v2.4 tag with an invalid text encoding restriction".into(),
            ));
        }
    }
    Ok(())
}

/// The restrictions byte of the v2.4 extended header of the tag at `at`, where symphonia
/// would read one.
fn restriction_byte(b: &[u8], at: usize) -> Option<u8> {
    let (major, flags) = (*b.get(at + 3)?, *b.get(at + 5)?);
    if major != 4 || flags & 0x40 == 0 {
        return None;
    }
    // The 10-byte tag header, then the extended header: its size (4 bytes), the flag bytes'
    // count (must be 1) and the flags.
    let ext = at + 10;
    if *b.get(ext + 4)? != 1 {
        return None;
    }
    let ext_flags = *b.get(ext + 5)?;
    let mut pos = ext + 6;
    if ext_flags & 0x40 != 0 {
        // "Tag is an update": a length byte symphonia requires to be 1, nothing after it.
        (*b.get(pos)? == 1).then_some(())?;
        pos += 1;
    }
    if ext_flags & 0x20 != 0 {
        // CRC: a length byte of 5, then a 35-bit syncsafe integer in 5 bytes.
        (*b.get(pos)? == 5).then_some(())?;
        pos += 6;
    }
    if ext_flags & 0x10 == 0 || *b.get(pos)? != 1 {
        return None;
    }
    b.get(pos + 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ID3v2.4 tag header with an extended header of `ext_flags` and then `rest`.
    fn tag(ext_flags: u8, rest: &[u8]) -> Vec<u8> {
        let mut b = b"ID3\x04\x00\x40\x00\x00\x00\x20".to_vec();
        b.extend_from_slice(&[0, 0, 0, 6, 1, ext_flags]);
        b.extend_from_slice(rest);
        b
    }

    #[test]
    fn a_text_encoding_restriction_is_refused_wherever_the_tag_is() {
        let mut bytes = b"not audio, then ".to_vec();
        bytes.extend(tag(0x10, &[1, 0x40]));
        assert!(check(&bytes).is_err());
        // After an update flag and a CRC.
        let crc = tag(0x70, &[1, 5, 0, 0, 0, 0, 0, 1, 0xE5]);
        assert!(check(&crc).is_err());
    }

    #[test]
    fn other_restrictions_and_other_tags_pass() {
        assert!(
            check(&tag(0x10, &[1, 0x3F])).is_ok(),
            "every other restriction bit"
        );
        assert!(check(&tag(0x00, &[])).is_ok(), "no restrictions");
        assert!(
            check(&tag(0x10, &[2, 0x40])).is_ok(),
            "symphonia refuses the length itself"
        );
        let mut v3 = tag(0x10, &[1, 0x40]);
        v3[3] = 3;
        assert!(check(&v3).is_ok(), "a v2.3 tag has no restrictions");
        assert!(check(&tag(0x10, &[1])).is_ok(), "cut short");
        assert!(check(b"ID3").is_ok());
    }

    #[test]
    fn the_fuzzers_id3_crash_is_refused_before_symphonia_reads_it() {
        let bytes = include_bytes!(
            "../../fuzz/regressions/audio_decode/crash-dac18f9cb1072be54b1f036c2ea4bb710272c0dc"
        );
        let opts = crate::audio::decode::DecodeOptions::new(32_000, 30.0);
        let e = crate::audio::decode::decode(bytes, &opts).expect_err("refused");
        assert!(e.to_string().contains("ID3v2.4"), "{e}");
    }
}
