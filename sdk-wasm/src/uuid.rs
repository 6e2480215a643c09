//! UUID v4 text from 16 random bytes (the glue draws them from `crypto.getRandomValues`).

/// Formats `bytes` as a version-4, RFC 4122 variant UUID in lowercase.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_version_and_variant() {
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
        assert_eq!(uuid_v4([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn always_a_canonical_v4(bytes in any::<[u8; 16]>()) {
                let u = uuid_v4(bytes);
                prop_assert_eq!(u.len(), 36);
                let parts: Vec<_> = u.split('-').map(str::len).collect();
                prop_assert_eq!(parts, vec![8, 4, 4, 4, 12]);
                prop_assert_eq!(&u[14..15], "4");
                prop_assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
            }
        }
    }
}
