//! Excluding messages by routing key (§8): the matcher, and the AMQP mover
//! that takes exactly the messages present when it starts.

pub mod mover;

mod glob;

use regex_lite::Regex;

use crate::error::usage;

/// Routing-key globs: `*` matches any text (dots included), `?` one
/// character, `[abc]`, `[a-z]` and `[!abc]` a class, `{a,b}` either, `\`
/// escapes the next character. A key is excluded if any glob matches.
#[derive(Debug, Clone)]
pub struct Matcher {
    patterns: Vec<String>,
    set: Vec<Regex>,
}

impl Matcher {
    /// Compiles the globs; an invalid one is a usage error naming it.
    pub fn new(patterns: &[String]) -> anyhow::Result<Matcher> {
        if patterns.is_empty() {
            return Err(usage("give at least one --routing-key glob"));
        }
        let mut set = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            if pattern.is_empty() {
                return Err(usage(
                    "an empty routing-key glob matches nothing; remove it",
                ));
            }
            let regex = glob::to_regex(pattern)
                .and_then(|re| Regex::new(&re).map_err(|e| e.to_string()))
                .map_err(|e| usage(format!("invalid routing-key glob {pattern:?}: {e}")))?;
            set.push(regex);
        }
        Ok(Matcher {
            patterns: patterns.to_vec(),
            set,
        })
    }

    /// True if the routing key is to be excluded.
    pub fn matches(&self, routing_key: &str) -> bool {
        self.set.iter().any(|re| re.is_match(routing_key))
    }

    /// The globs as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Kind, kind_of};

    fn m(globs: &[&str]) -> Matcher {
        Matcher::new(&globs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn star_spans_dots() {
        let matcher = m(&["oro.email.*"]);
        assert!(matcher.matches("oro.email.send_email_template"));
        assert!(matcher.matches("oro.email.a.b"));
        assert!(!matcher.matches("oro.search.reindex"));
        assert!(!matcher.matches("oro.emails"));
    }

    #[test]
    fn any_glob_matches() {
        let matcher = m(&["oro.email.*", "oro.integration.?ync"]);
        assert!(matcher.matches("oro.integration.sync"));
        assert!(!matcher.matches("oro.integration.async"));
    }

    #[test]
    fn classes_alternatives_and_escapes() {
        let matcher = m(&["oro.{email,search}.[a-c]x", "lit\\*eral", "neg.[!0-9]"]);
        assert!(matcher.matches("oro.email.bx"));
        assert!(matcher.matches("oro.search.ax"));
        assert!(!matcher.matches("oro.search.dx"));
        assert!(!matcher.matches("oro.other.ax"));
        assert!(matcher.matches("lit*eral"));
        assert!(!matcher.matches("litXeral"));
        assert!(matcher.matches("neg.x"));
        assert!(!matcher.matches("neg.5"));
    }

    #[test]
    fn invalid_globs_are_usage_errors() {
        for bad in [
            &["oro.[email"][..],
            &["a{b"],
            &["a}"],
            &["a\\"],
            &["[z-a]"],
            &[""],
            &[],
        ] {
            let globs: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            let err = Matcher::new(&globs).unwrap_err();
            assert_eq!(kind_of(&err), Kind::Usage, "{err}");
        }
        let err = Matcher::new(&["oro.[email".to_string()]).unwrap_err();
        assert!(err.to_string().contains("oro.[email"), "{err}");
    }
}
