//! `init(options)`: the options as read from the JS object, and their validation
//! into a [`Config`]. Every error names the option.
//!
//! The glue (`lib.rs`) walks `Object.entries(options)` and hands each value's JS
//! type to [`RawOptions::set`], rather than using serde-wasm-bindgen's `Deserializer`.
//! That cannot be made cheap: every `Deserializer` method that yields a value
//! (`deserialize_any`, `_map`, `_struct`, `_str`, `_bool`, the numbers…) has a
//! reachable `invalid_type` branch (e.g. for a Symbol), and that one non-generic
//! function formats `serde::de::Unexpected` through `fmt::Arguments`, whose `Float`
//! arm links core's float printing. Measured with a hand-written `Deserialize` whose
//! visitor overrides every method: +19.0 KB gzipped (docs/BENCHMARKS.md).

use crate::text::cat;

/// The options object exactly as a lesson passes it (camelCase keys).
#[derive(Debug, Default)]
pub struct RawOptions {
    pub endpoint: Option<String>,
    pub test: Option<bool>,
    pub user_agent: Option<String>,
    pub learner_id: Option<String>,
    pub max_queue: Option<u32>,
    pub retry_base_ms: Option<u32>,
    pub retry_cap_ms: Option<u32>,
    pub batch_size: Option<u32>,
}

/// One option value, by JS type (`undefined` and `null` are [`Value::Absent`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `undefined` or `null`: the option is not given.
    Absent,
    Bool(bool),
    Number(f64),
    Str(String),
    /// An object, array, function…: never a valid option.
    Other,
}

impl RawOptions {
    /// Sets option `key` from `value`; an unknown key or a value of the wrong type is
    /// an error naming the option.
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), String> {
        let wrong = |what: &str| cat(&["option `", key, "` must be ", what]);
        let string = |v: Value| match v {
            Value::Absent => Ok(None),
            Value::Str(s) => Ok(Some(s)),
            _ => Err(wrong("a string")),
        };
        let number = |v: Value| match v {
            Value::Absent => Ok(None),
            Value::Number(n) => whole_number(key, n).map(Some),
            _ => Err(wrong("a whole number")),
        };
        match key {
            "endpoint" => self.endpoint = string(value)?,
            "userAgent" => self.user_agent = string(value)?,
            "learnerId" => self.learner_id = string(value)?,
            "test" => {
                self.test = match value {
                    Value::Absent => None,
                    Value::Bool(b) => Some(b),
                    _ => return Err(wrong("true or false")),
                }
            }
            "maxQueue" => self.max_queue = number(value)?,
            "retryBaseMs" => self.retry_base_ms = number(value)?,
            "retryCapMs" => self.retry_cap_ms = number(value)?,
            "batchSize" => self.batch_size = number(value)?,
            _ => {
                return Err(cat(&[
                    "unknown option `",
                    key,
                    "` (known: endpoint, test, userAgent, learnerId, maxQueue, retryBaseMs, retryCapMs, batchSize)",
                ]))
            }
        }
        Ok(())
    }
}

/// A JS number given for option `name` as a u32: whole, not negative, not huge.
pub fn whole_number(name: &str, value: f64) -> Result<u32, String> {
    if value >= 0.0 && value <= u32::MAX as f64 && value == (value as u32) as f64 {
        Ok(value as u32)
    } else {
        Err(cat(&["option `", name, "` must be a whole number"]))
    }
}

/// The largest batch the collector accepts.
pub const MAX_BATCH: u32 = 500;

/// Validated settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Collector base URL without trailing slash.
    pub endpoint: String,
    pub test: bool,
    pub user_agent: String,
    /// The pseudonymous learner every event records; empty when not given. The shim
    /// always gives one, the lesson's or this browser profile's, and is the one home of
    /// its rule (a non-nil UUID; init rejects any other): checking it here too cost
    /// about 300 B gzipped of wasm (docs/BENCHMARKS.md).
    pub learner_id: String,
    pub max_queue: u32,
    pub retry_base_ms: u32,
    pub retry_cap_ms: u32,
    pub batch_size: u32,
}

impl Config {
    /// Checks `raw`; `default_user_agent` is used when `userAgent` is absent.
    /// The error names the option and what it must be.
    pub fn from_raw(raw: RawOptions, default_user_agent: impl FnOnce() -> String) -> Result<Config, String> {
        let endpoint = raw
            .endpoint
            .ok_or("option `endpoint` is required, e.g. \"https://check.hourofci.org:4000\"")?;
        // Without surrounding spaces and trailing slashes (a byte loop: `trim` and
        // `trim_end_matches` are a few hundred bytes of wasm).
        let b = endpoint.as_bytes();
        let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
        let mut end = b.len();
        while end > start && (b[end - 1].is_ascii_whitespace() || b[end - 1] == b'/') {
            end -= 1;
        }
        let endpoint = endpoint.get(start..end).unwrap_or_default().to_string();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) || endpoint.len() < "http://x".len() {
            return Err("option `endpoint` must be an http(s) URL, e.g. \"https://check.hourofci.org:4000\"".into());
        }
        let user_agent = match raw.user_agent {
            Some(ua) if ua.is_empty() || ua.len() > 256 => {
                return Err("option `userAgent` must be 1 to 256 bytes long".into())
            }
            Some(ua) => ua,
            None => default_user_agent(),
        };
        let at_least_one = |v: Option<u32>, default: u32, name: &str| match v {
            Some(0) => Err(cat(&["option `", name, "` must be at least 1"])),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let retry_base_ms = at_least_one(raw.retry_base_ms, 1000, "retryBaseMs")?;
        let retry_cap_ms = at_least_one(raw.retry_cap_ms, 60_000.max(retry_base_ms), "retryCapMs")?;
        if retry_cap_ms < retry_base_ms {
            return Err("option `retryCapMs` must not be less than `retryBaseMs`".into());
        }
        let batch_size = at_least_one(raw.batch_size, 100, "batchSize")?;
        if batch_size > MAX_BATCH {
            return Err("option `batchSize` must be at most 500".into());
        }
        Ok(Config {
            endpoint,
            test: raw.test.unwrap_or(false),
            user_agent,
            learner_id: raw.learner_id.unwrap_or_default(),
            max_queue: at_least_one(raw.max_queue, 1000, "maxQueue")?,
            retry_base_ms,
            retry_cap_ms,
            batch_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(endpoint: &str) -> RawOptions {
        RawOptions {
            endpoint: Some(endpoint.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_the_js_api() {
        let c = Config::from_raw(raw("https://check.hourofci.org:4000/"), || "md5".into()).unwrap();
        assert_eq!(
            c,
            Config {
                endpoint: "https://check.hourofci.org:4000".into(),
                test: false,
                user_agent: "md5".into(),
                learner_id: String::new(),
                max_queue: 1000,
                retry_base_ms: 1000,
                retry_cap_ms: 60_000,
                batch_size: 100,
            }
        );
    }

    #[test]
    fn errors_name_the_option() {
        let cases: Vec<(RawOptions, &str)> = vec![
            (RawOptions::default(), "`endpoint`"),
            (raw("check.hourofci.org"), "`endpoint`"),
            (raw("ftp://check.hourofci.org"), "`endpoint`"),
            (
                RawOptions {
                    user_agent: Some(String::new()),
                    ..raw("http://h")
                },
                "`userAgent`",
            ),
            (
                RawOptions {
                    max_queue: Some(0),
                    ..raw("http://h")
                },
                "`maxQueue`",
            ),
            (
                RawOptions {
                    batch_size: Some(501),
                    ..raw("http://h")
                },
                "`batchSize`",
            ),
            (
                RawOptions {
                    retry_base_ms: Some(0),
                    ..raw("http://h")
                },
                "`retryBaseMs`",
            ),
            (
                RawOptions {
                    retry_base_ms: Some(5000),
                    retry_cap_ms: Some(10),
                    ..raw("http://h")
                },
                "`retryCapMs`",
            ),
        ];
        for (r, name) in cases {
            let err = Config::from_raw(r, || "x".into()).unwrap_err();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn a_given_learner_id_is_kept_as_given() {
        let id = "0B7E6F4C-3A8D-4F2E-9C1B-5D6A7E8F9A0B";
        let c = Config::from_raw(
            RawOptions {
                learner_id: Some(id.into()),
                ..raw("http://h")
            },
            || "x".into(),
        )
        .unwrap();
        assert_eq!(c.learner_id, id);
        let mut r = raw("http://h");
        r.set("learnerId", Value::Str(id.into())).unwrap();
        assert_eq!(r.learner_id.as_deref(), Some(id));
        assert!(r
            .set("learnerId", Value::Number(7.0))
            .unwrap_err()
            .contains("`learnerId`"));
    }

    #[test]
    fn a_large_base_raises_the_default_cap() {
        let c = Config::from_raw(
            RawOptions {
                retry_base_ms: Some(90_000),
                ..raw("http://h")
            },
            || "x".into(),
        )
        .unwrap();
        assert_eq!(c.retry_cap_ms, 90_000);
    }

    #[test]
    fn numbers_must_be_whole() {
        assert_eq!(whole_number("maxQueue", 10.0), Ok(10));
        assert_eq!(whole_number("maxQueue", 0.0), Ok(0));
        for bad in [2.5, -1.0, f64::NAN, f64::INFINITY, 5e9] {
            assert!(
                whole_number("maxQueue", bad).unwrap_err().contains("`maxQueue`"),
                "{bad}"
            );
        }
    }

    #[test]
    fn typos_are_found() {
        let err = RawOptions::default()
            .set("endPoint", Value::Str("http://h".into()))
            .unwrap_err();
        assert!(err.contains("unknown option `endPoint`"), "{err}");
    }

    #[test]
    fn values_are_typed_and_errors_name_the_option() {
        let mut r = RawOptions::default();
        r.set("endpoint", Value::Str("http://h".into())).unwrap();
        r.set("test", Value::Bool(true)).unwrap();
        r.set("maxQueue", Value::Number(10.0)).unwrap();
        r.set("userAgent", Value::Absent).unwrap();
        assert_eq!(
            (r.endpoint.as_deref(), r.test, r.max_queue, r.user_agent.as_deref()),
            (Some("http://h"), Some(true), Some(10), None)
        );
        for (key, value) in [
            ("maxQueue", Value::Number(2.5)),
            ("maxQueue", Value::Str("ten".into())),
            ("test", Value::Number(1.0)),
            ("endpoint", Value::Other),
            ("userAgent", Value::Bool(false)),
            ("retryCapMs", Value::Other),
        ] {
            let err = r.set(key, value.clone()).unwrap_err();
            assert!(err.contains(&format!("`{key}`")), "{key} {value:?}: {err}");
        }
    }
}
