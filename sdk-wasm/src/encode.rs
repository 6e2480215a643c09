//! Percent-encoding of one URL path segment, byte for byte what JavaScript's
//! `encodeURIComponent` produces, so the collector decodes every value exactly.

/// Characters `encodeURIComponent` leaves alone (RFC 3986 unreserved plus `!'()*`).
fn is_kept(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')')
}

/// Encodes `value` as `encodeURIComponent` does: UTF-8 bytes, `%XX` in upper case.
pub fn encode_uri_component(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if is_kept(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_known_encode_uri_component_outputs() {
        // Outputs copied from Chromium's encodeURIComponent.
        assert_eq!(encode_uri_component("q/7?"), "q%2F7%3F");
        assert_eq!(
            encode_uri_component("naïve & \"quoted\" 😀"),
            "na%C3%AFve%20%26%20%22quoted%22%20%F0%9F%98%80"
        );
        assert_eq!(encode_uri_component("A-Z_a.z!~*'()"), "A-Z_a.z!~*'()");
        assert_eq!(encode_uri_component("%#\n);"), "%25%23%0A)%3B");
        assert_eq!(encode_uri_component(""), "");
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn decode(s: &str) -> Vec<u8> {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            out
        }

        proptest! {
            #[test]
            fn round_trips_any_string(s in any::<String>()) {
                let enc = encode_uri_component(&s);
                prop_assert_eq!(decode(&enc), s.as_bytes().to_vec());
            }

            #[test]
            fn output_is_one_safe_path_segment(s in any::<String>()) {
                let enc = encode_uri_component(&s);
                prop_assert!(enc.bytes().all(|b| is_kept(b) || b == b'%' || b.is_ascii_hexdigit()));
                prop_assert!(!enc.contains('/') && !enc.contains('?') && !enc.contains('#'));
            }
        }
    }
}
