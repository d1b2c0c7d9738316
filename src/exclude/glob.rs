//! Routing-key globs as regular expressions, for `regex-lite` (which the S3
//! client links already; `globset` brought four crates and 0.5 MB of
//! binary for this). The syntax and meaning are `globset`'s, with `*`
//! crossing dots and `\` escaping: a property test holds the two together.

/// The anchored regular expression for `glob`, or what is wrong with it.
pub fn to_regex(glob: &str) -> Result<String, String> {
    // Open `{…}` groups: each a list of alternatives, the last being written.
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut top = String::new();
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        let piece = match c {
            '*' => ".*".to_string(),
            '?' => ".".to_string(),
            '\\' => literal(chars.next().ok_or("it ends with a lone \\")?),
            '[' => class(&mut chars)?,
            '{' => {
                groups.push(vec![String::new()]);
                continue;
            }
            ',' if !groups.is_empty() => {
                groups
                    .last_mut()
                    .expect("a group is open")
                    .push(String::new());
                continue;
            }
            '}' => {
                let alternatives = groups.pop().ok_or("a } closes no {")?;
                // Empty alternatives are dropped, as globset drops them.
                let kept: Vec<String> =
                    alternatives.into_iter().filter(|a| !a.is_empty()).collect();
                if kept.is_empty() {
                    continue;
                }
                format!("(?:{})", kept.join("|"))
            }
            c => literal(c),
        };
        match groups.last_mut() {
            Some(group) => group
                .last_mut()
                .expect("a group has an alternative")
                .push_str(&piece),
            None => top.push_str(&piece),
        }
    }
    if !groups.is_empty() {
        return Err("a { is never closed".into());
    }
    Ok(format!("^{top}$"))
}

/// A character matched as itself.
fn literal(c: char) -> String {
    format!("\\x{{{:x}}}", u32::from(c))
}

/// `[…]` after its `[`: `!` or `^` first negates, `]` or `-` first is
/// itself, `a-z` a range, a `-` last is itself.
fn class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, String> {
    let negated = matches!(chars.peek(), Some('!' | '^'));
    if negated {
        chars.next();
    }
    let mut ranges: Vec<(char, char)> = Vec::new();
    let (mut first, mut in_range) = (true, false);
    loop {
        let c = chars.next().ok_or("a [ is never closed")?;
        match c {
            ']' if !first => break,
            '-' if !first && !in_range => in_range = true,
            c => {
                if in_range {
                    let last = ranges.last_mut().expect("a range has its start");
                    if c < last.0 {
                        return Err(format!("the range {}-{c} is backwards", last.0));
                    }
                    last.1 = c;
                    in_range = false;
                } else {
                    ranges.push((c, c));
                }
            }
        }
        first = false;
    }
    if in_range {
        ranges.push(('-', '-'));
    }
    let mut re = String::from(if negated { "[^" } else { "[" });
    for (lo, hi) in ranges {
        re.push_str(&literal(lo));
        if hi != lo {
            re.push('-');
            re.push_str(&literal(hi));
        }
    }
    re.push(']');
    Ok(re)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex_lite::Regex;

    fn ours(glob: &str) -> Option<Regex> {
        to_regex(glob).ok().map(|re| Regex::new(&re).unwrap())
    }

    fn theirs(glob: &str) -> Option<globset::GlobMatcher> {
        globset::GlobBuilder::new(glob)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .ok()
            .map(|g| g.compile_matcher())
    }

    #[test]
    fn known_shapes() {
        assert_eq!(to_regex("a*").unwrap(), "^\\x{61}.*$");
        assert_eq!(to_regex("{a,}").unwrap(), "^(?:\\x{61})$");
        assert_eq!(to_regex("[]-]").unwrap(), "^[\\x{5d}\\x{2d}]$");
        assert!(to_regex("[a").is_err());
        assert!(to_regex("}").is_err());
        assert!(to_regex("{a").is_err());
        assert!(to_regex("a\\").is_err());
        assert!(to_regex("[b-a]").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Globs of the characters that mean something, and keys of the
        /// characters they name: the same verdicts as globset's, and the same
        /// globs refused. (`/` and `**` are left out: globset gives them a
        /// path meaning routing keys do not have.)
        #[test]
        fn verdicts_are_globsets(
            glob in "([ab.,!^\\-\\[\\]{}?\\\\]|\\*){0,10}",
            keys in proptest::collection::vec("[ab.,!^\\-\\[\\]{}?*\\\\]{0,6}", 1..12),
        ) {
            let mut glob = glob;
            while glob.contains("**") {
                glob = glob.replace("**", "*");
            }
            let (o, t) = (ours(&glob), theirs(&glob));
            prop_assert_eq!(o.is_some(), t.is_some(), "glob {:?} compiled by one only", glob);
            if let (Some(o), Some(t)) = (o, t) {
                for key in keys {
                    prop_assert_eq!(o.is_match(&key), t.is_match(&key), "glob {:?} key {:?}", glob, key);
                }
            }
        }
    }
}
