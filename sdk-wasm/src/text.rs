//! String building that stays small in the wasm, for the pure modules and the glue alike.

/// Joins string pieces (`[..].concat()` costs a generic 1 KB in the wasm).
pub(crate) fn cat(parts: &[&str]) -> String {
    let mut out = String::new();
    for p in parts {
        out.push_str(p);
    }
    out
}
