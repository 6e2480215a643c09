//! The original service's validation rules, made configurable (`--lessons-file`).
//!
//! Deliberately NOT carried over: the original refused answers containing `);` as an
//! "injection guard". Every query here is parameterized, so that only lost real answers.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::event::{Invalid, NewEvent};

/// Column widths of the original tables; longer values could not be stored.
const LESSON_MAX_CHARS: usize = 35;
const LEVEL_MAX_CHARS: usize = 10;
/// Default cap on an answer (`--max-answer-bytes`).
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 16 * 1024;
const USER_AGENT_MAX_BYTES: usize = 256;

const ORIGINAL_LESSONS: &[&str] = &[
    "template",
    "gateway",
    "big-data",
    "computational-thinking",
    "cyberinfrastructure",
    "geospatial-data",
    "interdisciplinary-communication",
    "parallel-computation",
    "spatial-modeling-analytics",
    "spatial-thinking",
];
const ORIGINAL_LEVELS: &[&str] = &["template", "gateway", "beginner", "advanced"];

/// An event that kept the [`Rules`]: the only kind `GroupCommit::submit` takes, so
/// nothing reaches a store unchecked. Made only by [`Rules::admit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted(NewEvent);

impl Admitted {
    pub fn event(&self) -> &NewEvent {
        &self.0
    }

    pub fn into_event(self) -> NewEvent {
        self.0
    }
}

/// Which lessons and levels are accepted, and how large an answer may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub lessons: BTreeSet<String>,
    pub levels: BTreeSet<String>,
    pub max_answer_bytes: usize,
}

/// Shape of `--lessons-file`: `{"lessons":["gateway",...],"levels":["beginner",...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LessonsFile {
    lessons: Vec<String>,
    levels: Vec<String>,
}

impl Rules {
    /// The original service's lists and the default answer cap.
    pub fn original() -> Self {
        Rules {
            lessons: ORIGINAL_LESSONS.iter().map(|s| s.to_string()).collect(),
            levels: ORIGINAL_LEVELS.iter().map(|s| s.to_string()).collect(),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }

    /// Read a lessons file (JSON, see [`LessonsFile`]); names must fit the original
    /// column widths (lesson 35 characters, level 10).
    pub fn from_file(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read lessons file {}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| anyhow::anyhow!("lessons file {}: {e}", path.display()))
    }

    /// Parse the lessons-file JSON text.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let file: LessonsFile = serde_json::from_str(text)?;
        let check = |names: &[String], max: usize, what: &str| -> anyhow::Result<()> {
            anyhow::ensure!(!names.is_empty(), "the {what} list is empty");
            for n in names {
                anyhow::ensure!(
                    !n.is_empty() && n.chars().count() <= max && !n.contains('\0'),
                    "{what} {n:?} must be 1 to {max} characters"
                );
            }
            Ok(())
        };
        check(&file.lessons, LESSON_MAX_CHARS, "lesson")?;
        check(&file.levels, LEVEL_MAX_CHARS, "level")?;
        Ok(Rules {
            lessons: file.lessons.into_iter().collect(),
            levels: file.levels.into_iter().collect(),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        })
    }

    pub fn with_max_answer_bytes(mut self, max: usize) -> Self {
        self.max_answer_bytes = max;
        self
    }

    /// The event, as one the write path accepts, when it keeps every rule; else the
    /// first broken rule.
    pub fn admit(&self, e: NewEvent) -> Result<Admitted, Invalid> {
        self.check(&e)?;
        Ok(Admitted(e))
    }

    /// Check one event against the rules. The first broken rule is reported.
    pub fn check(&self, e: &NewEvent) -> Result<(), Invalid> {
        for (field, value) in [
            ("user_agent", &e.user_agent),
            ("lesson", &e.lesson),
            ("level", &e.level),
            ("question", &e.question),
            ("answer", &e.answer),
        ] {
            if value.contains('\0') {
                return Err(Invalid::field(field, "must not contain a NUL character"));
            }
        }
        if e.user_agent.is_empty() || e.user_agent.len() > USER_AGENT_MAX_BYTES {
            return Err(Invalid::field(
                "user_agent",
                format!("must be 1 to {USER_AGENT_MAX_BYTES} bytes"),
            ));
        }
        if !self.lessons.contains(&e.lesson) {
            return Err(Invalid::field(
                "lesson",
                format!("must be one of: {}", join(&self.lessons)),
            ));
        }
        if !self.levels.contains(&e.level) {
            return Err(Invalid::field(
                "level",
                format!("must be one of: {}", join(&self.levels)),
            ));
        }
        if !is_question_id(&e.question) {
            return Err(Invalid::field(
                "question",
                "must be a digit 1-9 then a capital letter A-Z, e.g. 1A",
            ));
        }
        if e.answer.len() > self.max_answer_bytes {
            return Err(Invalid::too_large(
                Some("answer"),
                format!("must be at most {} bytes", self.max_answer_bytes),
            ));
        }
        Ok(())
    }
}

/// `^[1-9][A-Z]$`, as the original.
fn is_question_id(q: &str) -> bool {
    matches!(q.as_bytes(), [b'1'..=b'9', b'A'..=b'Z'])
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Table;

    fn event(lesson: &str, level: &str, question: &str, answer: &str) -> NewEvent {
        NewEvent {
            id: None,
            table: Table::Production,
            user_agent: "0123456789abcdef0123456789abcdef".into(),
            lesson: lesson.into(),
            level: level.into(),
            question: question.into(),
            answer: answer.into(),
            client_time: None,
            learner_id: None,
        }
    }

    #[test]
    fn original_rules_accept_old_lesson_values() {
        let r = Rules::original();
        assert_eq!(r.check(&event("gateway", "beginner", "1A", "true")), Ok(()));
        assert_eq!(
            r.check(&event("spatial-modeling-analytics", "advanced", "9Z", "x")),
            Ok(())
        );
    }

    #[test]
    fn the_old_injection_guard_is_gone() {
        let r = Rules::original();
        assert_eq!(
            r.check(&event("gateway", "beginner", "1A", "f(x); ); DROP TABLE t;--")),
            Ok(())
        );
    }

    #[test]
    fn each_rule_names_its_field() {
        let r = Rules::original();
        let field = |e: NewEvent| r.check(&e).unwrap_err().field.unwrap();
        assert_eq!(field(event("cooking", "beginner", "1A", "a")), "lesson");
        assert_eq!(field(event("gateway", "expert", "1A", "a")), "level");
        for q in ["0A", "1a", "1AB", "A1", "", "10"] {
            assert_eq!(field(event("gateway", "beginner", q, "a")), "question", "{q}");
        }
        assert_eq!(field(event("gateway", "beginner", "1A", "a\0b")), "answer");
        let mut e = event("gateway", "beginner", "1A", "a");
        e.user_agent = String::new();
        assert_eq!(field(e), "user_agent");
        let too_big = r
            .check(&event("gateway", "beginner", "1A", &"x".repeat(16 * 1024 + 1)))
            .unwrap_err();
        assert_eq!(
            (too_big.kind, too_big.field),
            (crate::event::InvalidKind::TooLarge, Some("answer"))
        );
    }

    #[test]
    fn lessons_file_replaces_the_lists() {
        let r = Rules::from_json(r#"{"lessons":["new-lesson"],"levels":["expert"]}"#).unwrap();
        assert_eq!(r.check(&event("new-lesson", "expert", "2B", "a")), Ok(()));
        assert!(r.check(&event("gateway", "beginner", "1A", "a")).is_err());
        assert!(Rules::from_json(r#"{"lessons":["x"],"levels":["much-too-long-level"]}"#).is_err());
        assert!(Rules::from_json(r#"{"lessons":[],"levels":["a"]}"#).is_err());
    }
}
