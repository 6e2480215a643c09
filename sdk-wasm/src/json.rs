//! A minimal JSON reader and string writer for the SDK's own small documents
//! (the stored queue, batch bodies, collector replies). Hand-written instead of
//! serde_json to keep float parsing/formatting and its code size out of the wasm:
//! numbers are kept as their source text and only ever read as integers. In the
//! browser, [`parse`] is `JSON.parse` converted to [`Json`] (749 B smaller than the
//! reader, docs/BENCHMARKS.md); the reader serves the native builds and tests.

/// A parsed JSON value. Numbers keep their text; [`Json::as_u64`] reads integers.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The member `key` of an object (first occurrence).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A non-negative integer written without fraction or exponent.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => parse_uint(n, 10),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// A number of ASCII digits in `radix` (no sign, no spaces); `None` when empty,
/// anything else, or over `u64::MAX`. One small loop instead of core's `parse`
/// and `from_str_radix` (several hundred bytes of wasm each).
pub fn parse_uint(s: &str, radix: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        let d = (b as char).to_digit(radix)?;
        n = n.checked_mul(radix as u64)?.checked_add(d as u64)?;
    }
    Some(n)
}

/// Parses a whole JSON document; `None` for anything malformed (never panics).
/// In the browser this is the browser's own `JSON.parse`, converted: smaller than
/// the reader below (docs/BENCHMARKS.md), which natively tests the pure modules.
#[cfg(target_arch = "wasm32")]
pub fn parse(text: &str) -> Option<Json> {
    from_js(&js_sys::JSON::parse(text).ok()?, 0)
}

#[cfg(target_arch = "wasm32")]
fn from_js(v: &wasm_bindgen::JsValue, depth: u32) -> Option<Json> {
    use wasm_bindgen::JsCast;
    if depth > 64 {
        return None;
    }
    Some(if let Some(s) = v.as_string() {
        Json::String(s)
    } else if let Some(b) = v.as_bool() {
        Json::Bool(b)
    } else if let Some(n) = v.as_f64() {
        // Only whole non-negative numbers are ever read ([`Json::as_u64`]).
        let mut text = String::new();
        if n >= 0.0 && n == (n as u64) as f64 {
            write_u64(&mut text, n as u64);
        }
        Json::Number(text)
    } else if js_sys::Array::is_array(v) {
        let mut items = Vec::new();
        for item in v.unchecked_ref::<js_sys::Array>().iter() {
            items.push(from_js(&item, depth + 1)?);
        }
        Json::Array(items)
    } else if v.is_object() {
        let mut members = Vec::new();
        for entry in js_sys::Object::entries(v.unchecked_ref()).iter() {
            let entry: js_sys::Array = entry.unchecked_into();
            members.push((entry.get(0).as_string()?, from_js(&entry.get(1), depth + 1)?));
        }
        Json::Object(members)
    } else {
        Json::Null
    })
}

/// Parses a whole JSON document; `None` for anything malformed (never panics).
#[cfg(not(target_arch = "wasm32"))]
pub fn parse(text: &str) -> Option<Json> {
    let mut p = Parser {
        t: text,
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = p.value()?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

#[cfg(not(target_arch = "wasm32"))]
struct Parser<'a> {
    /// The text, sliced with `get` (no `from_utf8` re-validation: its code is large).
    t: &'a str,
    s: &'a [u8],
    i: usize,
    depth: u32,
}

#[cfg(not(target_arch = "wasm32"))]
impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &[u8], v: Json) -> Option<Json> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Some(v)
        } else {
            None
        }
    }

    fn value(&mut self) -> Option<Json> {
        self.ws();
        // Deep nesting is never ours: refuse it instead of risking the stack.
        if self.depth > 64 {
            return None;
        }
        match *self.s.get(self.i)? {
            b'n' => self.literal(b"null", Json::Null),
            b't' => self.literal(b"true", Json::Bool(true)),
            b'f' => self.literal(b"false", Json::Bool(false)),
            b'"' => self.string().map(Json::String),
            b'[' => {
                self.i += 1;
                self.depth += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value()?);
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                self.depth -= 1;
                Some(Json::Array(items))
            }
            b'{' => {
                self.i += 1;
                self.depth += 1;
                let mut members = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.ws();
                        let key = self.string()?;
                        if !self.eat(b':') {
                            return None;
                        }
                        members.push((key, self.value()?));
                        if self.eat(b'}') {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                self.depth -= 1;
                Some(Json::Object(members))
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while matches!(self.s.get(self.i), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                    self.i += 1;
                }
                Some(Json::Number(self.t.get(start..self.i)?.to_string()))
            }
            _ => None,
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.t.get(self.i..self.i + 4)?;
        self.i += 4;
        parse_uint(h, 16).map(|n| n as u32)
    }

    fn string(&mut self) -> Option<String> {
        if self.s.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while !matches!(self.s.get(self.i), Some(b'"' | b'\\') | None) {
                if self.s[self.i] < 0x20 {
                    return None;
                }
                self.i += 1;
            }
            out.push_str(self.t.get(start..self.i)?);
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                _ => {
                    self.i += 1;
                    let esc = *self.s.get(self.i)?;
                    self.i += 1;
                    let c = match esc {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) && self.s[self.i..].starts_with(b"\\u") {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    self.i = save;
                                    hi
                                }
                            } else {
                                hi
                            };
                            // A lone surrogate cannot live in a Rust string: JS would have sent U+FFFD too.
                            char::from_u32(code).unwrap_or('\u{FFFD}')
                        }
                        _ => return None,
                    };
                    out.push(c);
                }
            }
        }
    }
}

/// Appends `s` as a JSON string literal (quotes included).
pub fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `n` in decimal (integers only: no float formatting in the wasm).
pub fn write_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(buf[i..].iter().map(|&b| b as char));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uints_are_digits_only() {
        assert_eq!(parse_uint("0", 10), Some(0));
        assert_eq!(parse_uint("18446744073709551615", 10), Some(u64::MAX));
        assert_eq!(parse_uint("00ff", 16), Some(255));
        assert_eq!(parse_uint("D83D", 16), Some(0xD83D));
        for bad in ["", "+1", "-1", " 1", "1.0", "1e3", "18446744073709551616", "0x1f"] {
            assert_eq!(parse_uint(bad, 10), None, "{bad}");
        }
    }

    #[test]
    fn reads_collector_replies() {
        let v = parse(r#"{"results":[{"id":"a","status":"written"},{"id":"b","status":"invalid","reason":"lesson: not \"known\""}]}"#).unwrap();
        let r = v.get("results").unwrap().as_array().unwrap();
        assert_eq!(r[1].get("reason").unwrap().as_str(), Some("lesson: not \"known\""));
        assert_eq!(
            parse(" [1, 20, -3.5e2] ").unwrap().as_array().unwrap()[1].as_u64(),
            Some(20)
        );
        assert_eq!(parse(r#""\ud83d\ude00 \u00e9""#), Some(Json::String("😀 é".into())));
    }

    #[test]
    fn refuses_malformed_documents() {
        for bad in [
            "",
            "[",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "\"\u{1}\"",
            "nul",
            "[1] x",
            "\"\\q\"",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse(&"[".repeat(10_000)), None);
    }

    #[test]
    fn writes_integers() {
        let mut s = String::new();
        write_u64(&mut s, 0);
        s.push(',');
        write_u64(&mut s, u64::MAX);
        assert_eq!(s, "0,18446744073709551615");
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_string_round_trips(s in any::<String>()) {
                let mut out = String::new();
                write_str(&mut out, &s);
                prop_assert_eq!(parse(&out), Some(Json::String(s)));
            }

            #[test]
            fn arbitrary_text_never_panics(s in any::<String>()) {
                let _ = parse(&s);
            }
        }
    }
}
