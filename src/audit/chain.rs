//! The canonical byte encoding of a decision event, and the hash chain over it.
//!
//! The encoding is described in the [module documentation](super#the-hash-chain).

use sha2::{Digest, Sha256};

/// The hash that the first event links to: 32 zero bytes.
pub const GENESIS_PREV_HASH: [u8; 32] = [0; 32];

/// The first field of a version 1 encoding: names the format and its version.
pub(crate) const ENCODING_TAG_V1: &[u8] = b"cxr-triage decision event v1";

/// The first field of a version 2 encoding (version 1's fields, then `viewed_ms` and
/// `ood_reason`).
pub(crate) const ENCODING_TAG_V2: &[u8] = b"cxr-triage decision event v2";

/// The encoding version new events are written with.
pub(crate) const LATEST_FORMAT: i64 = 2;

/// The columns of one event as stored, in chain order. Text is hashed exactly as stored, and
/// scores as the bits of the stored REAL, so any change to a stored value changes the hash.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventFields<'a> {
    pub id: i64,
    pub decided_at: &'a str,
    pub reader: &'a str,
    pub app_version: &'a str,
    pub study_sha256: &'a str,
    pub study_path: &'a str,
    pub model_id: Option<&'a str>,
    pub weights_sha256: Option<&'a str>,
    pub score: Option<f64>,
    pub threshold: Option<f64>,
    pub ai_label: Option<&'a str>,
    pub prev_label: Option<&'a str>,
    pub new_label: Option<&'a str>,
    pub action: &'a str,
    pub reason: &'a str,
    /// Which encoding the event was written with (the stored `format_version`): 1 or 2.
    pub format_version: i64,
    /// Version 2: milliseconds the study's image was on screen before the decision.
    pub viewed_ms: Option<i64>,
    /// Version 2: why the model considers the study unlike its training films.
    pub ood_reason: Option<&'a str>,
}

/// Appends one field: `0x00` for NULL, or `0x01`, the length as 8 bytes big-endian, and the bytes.
fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// The canonical encoding of an event: every stored column but the two hashes and the format
/// version, in a fixed order. The format version picks the tag and the fields: version 1 stops
/// after `reason`; version 2 adds `viewed_ms` and `ood_reason`. Any other version is encoded
/// with a tag naming it and no fields, so that it can never match a stored hash.
pub(crate) fn encode(f: &EventFields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let real = |v: Option<f64>| v.map(|x| x.to_bits().to_be_bytes());
    let tag: &[u8] = match f.format_version {
        1 => ENCODING_TAG_V1,
        2 => ENCODING_TAG_V2,
        _ => {
            put(&mut out, Some(b"cxr-triage decision event: unknown format"));
            put(&mut out, Some(&f.format_version.to_be_bytes()));
            return out;
        }
    };
    put(&mut out, Some(tag));
    put(&mut out, Some(&f.id.to_be_bytes()));
    put(&mut out, Some(f.decided_at.as_bytes()));
    put(&mut out, Some(f.reader.as_bytes()));
    put(&mut out, Some(f.app_version.as_bytes()));
    put(&mut out, Some(f.study_sha256.as_bytes()));
    put(&mut out, Some(f.study_path.as_bytes()));
    put(&mut out, f.model_id.map(str::as_bytes));
    put(&mut out, f.weights_sha256.map(str::as_bytes));
    put(&mut out, real(f.score).as_ref().map(<[u8; 8]>::as_slice));
    put(
        &mut out,
        real(f.threshold).as_ref().map(<[u8; 8]>::as_slice),
    );
    put(&mut out, f.ai_label.map(str::as_bytes));
    put(&mut out, f.prev_label.map(str::as_bytes));
    put(&mut out, f.new_label.map(str::as_bytes));
    put(&mut out, Some(f.action.as_bytes()));
    put(&mut out, Some(f.reason.as_bytes()));
    if f.format_version >= 2 {
        put(
            &mut out,
            f.viewed_ms
                .map(i64::to_be_bytes)
                .as_ref()
                .map(<[u8; 8]>::as_slice),
        );
        put(&mut out, f.ood_reason.map(str::as_bytes));
    }
    out
}

/// SHA-256(`prev_hash` ‖ canonical encoding of the event).
pub(crate) fn row_hash(prev_hash: &[u8; 32], fields: &EventFields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(encode(fields));
    h.finalize().into()
}

/// Reads 64 hexadecimal digits (either case) into 32 bytes.
pub(crate) fn parse_hash_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Whether `s` is a SHA-256 as the store writes it: 64 lower-case hexadecimal digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventFields<'static> {
        EventFields {
            id: 1,
            decided_at: "2026-01-02T03:04:05.678Z",
            reader: "dr a",
            app_version: "0.1.0",
            study_sha256: "ab",
            study_path: "/x.jpeg",
            model_id: None,
            weights_sha256: None,
            score: Some(f64::from(0.75f32)),
            threshold: None,
            ai_label: Some("PNEUMONIA"),
            prev_label: None,
            new_label: Some("NORMAL"),
            action: "override",
            reason: "",
            format_version: 1,
            viewed_ms: None,
            ood_reason: None,
        }
    }

    #[test]
    fn encoding_matches_the_documented_layout_byte_for_byte() {
        fn field(bytes: &[u8]) -> Vec<u8> {
            let mut v = vec![1];
            v.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            v.extend_from_slice(bytes);
            v
        }
        let mut expected = Vec::new();
        expected.extend(field(b"cxr-triage decision event v1"));
        expected.extend(field(&[0, 0, 0, 0, 0, 0, 0, 1]));
        expected.extend(field(b"2026-01-02T03:04:05.678Z"));
        expected.extend(field(b"dr a"));
        expected.extend(field(b"0.1.0"));
        expected.extend(field(b"ab"));
        expected.extend(field(b"/x.jpeg"));
        expected.extend([0, 0]); // model_id, weights_sha256: NULL
        expected.extend(field(&[0x3f, 0xe8, 0, 0, 0, 0, 0, 0])); // 0.75 as IEEE 754 binary64
        expected.push(0); // threshold: NULL
        expected.extend(field(b"PNEUMONIA"));
        expected.push(0); // prev_label: NULL
        expected.extend(field(b"NORMAL"));
        expected.extend(field(b"override"));
        expected.extend(field(b""));
        assert_eq!(encode(&sample()), expected);
    }

    #[test]
    fn row_hash_matches_an_independent_sha256() {
        // Golden value from Python, over the bytes the test above spells out:
        //   import hashlib, struct
        //   f = lambda b: b"\x01" + struct.pack(">Q", len(b)) + b
        //   enc = (f(b"cxr-triage decision event v1") + f(struct.pack(">q", 1))
        //          + f(b"2026-01-02T03:04:05.678Z") + f(b"dr a") + f(b"0.1.0") + f(b"ab")
        //          + f(b"/x.jpeg") + b"\x00\x00" + f(struct.pack(">d", 0.75)) + b"\x00"
        //          + f(b"PNEUMONIA") + b"\x00" + f(b"NORMAL") + f(b"override") + f(b""))
        //   hashlib.sha256(bytes(32) + enc).hexdigest()
        let h = row_hash(&GENESIS_PREV_HASH, &sample());
        assert_eq!(crate::io::hex(&h), GOLDEN);
    }

    const GOLDEN: &str = "0f7b8613aba133e0e63a084a20d823621a0d6ad39bc14283fa3fea0289b59fe5";

    #[test]
    fn a_null_and_an_empty_string_encode_differently() {
        let mut a = sample();
        let mut b = sample();
        a.model_id = None;
        b.model_id = Some("");
        assert_ne!(encode(&a), encode(&b));
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_encoding() {
        let mut a = sample();
        let mut b = sample();
        a.reader = "dr ab";
        a.reason = "";
        b.reader = "dr a";
        b.reason = "b";
        assert_ne!(encode(&a), encode(&b));
    }

    #[test]
    fn version_2_appends_viewed_ms_and_ood_reason_to_the_version_1_fields() {
        let v1 = encode(&sample());
        let mut f = sample();
        f.format_version = 2;
        f.viewed_ms = Some(1234);
        f.ood_reason = None;
        let v2 = encode(&f);
        let mut expected = Vec::new();
        let field = |bytes: &[u8]| {
            let mut v = vec![1];
            v.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            v.extend_from_slice(bytes);
            v
        };
        expected.extend(field(b"cxr-triage decision event v2"));
        // Everything after version 1's tag is the same.
        let v1_tag_len = field(b"cxr-triage decision event v1").len();
        expected.extend_from_slice(&v1[v1_tag_len..]);
        expected.extend(field(&1234i64.to_be_bytes()));
        expected.push(0); // ood_reason: NULL
        assert_eq!(v2, expected);
        // The version 2 fields are hashed: changing either changes the encoding.
        let mut g = f;
        g.viewed_ms = Some(1235);
        assert_ne!(encode(&g), v2);
        let mut g = f;
        g.ood_reason = Some("");
        assert_ne!(encode(&g), v2);
        // A version 1 event ignores them; an unknown version matches neither.
        let mut g = f;
        g.format_version = 1;
        assert_eq!(encode(&g), v1);
        g.format_version = 3;
        assert_ne!(encode(&g), v1);
        assert_ne!(encode(&g), v2);
    }

    #[test]
    fn version_2_row_hash_matches_an_independent_sha256() {
        // Python, continuing the recipe above:
        //   enc2 = f(b"cxr-triage decision event v2") + enc[len(f(b"cxr-triage decision event v1")):]
        //          + f(struct.pack(">q", 1234)) + f(b"lateral view")
        //   hashlib.sha256(bytes(32) + enc2).hexdigest()
        let mut f = sample();
        f.format_version = 2;
        f.viewed_ms = Some(1234);
        f.ood_reason = Some("lateral view");
        let h = row_hash(&GENESIS_PREV_HASH, &f);
        assert_eq!(crate::io::hex(&h), GOLDEN_V2);
    }

    const GOLDEN_V2: &str = "8fef358dcd43929df50e7d694c17e2b6a51eb27a0c26827ad5015614f1ee81f7";

    #[test]
    fn hashes_parse_back_from_hex() {
        let h = row_hash(&GENESIS_PREV_HASH, &sample());
        assert_eq!(parse_hash_hex(&crate::io::hex(&h)), Some(h));
        assert_eq!(parse_hash_hex("zz"), None);
        assert_eq!(parse_hash_hex(&"g".repeat(64)), None);
        assert!(is_sha256_hex(&"0f".repeat(32)));
        assert!(!is_sha256_hex(&"0F".repeat(32)));
    }
}
