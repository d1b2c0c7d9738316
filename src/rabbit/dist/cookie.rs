//! The Erlang cookie, found the way `rabbitmqctl` finds it.

use std::path::{Path, PathBuf};

use crate::settings::Secret;

/// Where a cookie came from (for messages; never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieSource {
    /// `RABBITMQ_ERLANG_COOKIE`.
    Environment,
    /// A cookie file.
    File(PathBuf),
}

impl std::fmt::Display for CookieSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CookieSource::Environment => f.write_str("RABBITMQ_ERLANG_COOKIE"),
            CookieSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A cookie and where it came from.
#[derive(Debug, Clone)]
pub struct Cookie {
    /// The shared secret.
    pub value: Secret,
    /// Where it was found.
    pub source: CookieSource,
}

/// `RABBITMQ_ERLANG_COOKIE` if set, else `$HOME/.erlang.cookie`, as
/// `rabbitmqctl` does. The error says where it looked.
pub fn find(from_env: Option<&Secret>, home: Option<&Path>) -> anyhow::Result<Cookie> {
    if let Some(value) = from_env.filter(|v| !v.expose().trim().is_empty()) {
        return Ok(Cookie {
            value: Secret::new(value.expose().trim()),
            source: CookieSource::Environment,
        });
    }
    let Some(home) = home else {
        anyhow::bail!("no Erlang cookie: RABBITMQ_ERLANG_COOKIE and HOME are not set");
    };
    let path = home.join(".erlang.cookie");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("no Erlang cookie: cannot read {}: {e}", path.display()))?;
    // erl reads the first line; trailing blanks are not part of the cookie.
    let value = text.lines().next().unwrap_or("").trim_end().to_string();
    if value.is_empty() {
        anyhow::bail!("no Erlang cookie: {} is empty", path.display());
    }
    Ok(Cookie {
        value: Secret::new(value),
        source: CookieSource::File(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_wins_over_the_file() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".erlang.cookie"), "FROMFILE\n").unwrap();
        let env = Secret::new("FROMENV");
        let c = find(Some(&env), Some(home.path())).unwrap();
        assert_eq!(c.value.expose(), "FROMENV");
        assert_eq!(c.source, CookieSource::Environment);
        let c = find(None, Some(home.path())).unwrap();
        assert_eq!(c.value.expose(), "FROMFILE");
        assert_eq!(
            c.source,
            CookieSource::File(home.path().join(".erlang.cookie"))
        );
        // An empty variable is as good as none.
        let c = find(Some(&Secret::new("")), Some(home.path())).unwrap();
        assert_eq!(c.value.expose(), "FROMFILE");
    }

    #[test]
    fn a_missing_cookie_says_where_it_looked_and_never_prints_a_value() {
        let home = tempfile::tempdir().unwrap();
        let err = find(None, Some(home.path())).unwrap_err().to_string();
        assert!(err.contains(".erlang.cookie"), "{err}");
        std::fs::write(home.path().join(".erlang.cookie"), "\n").unwrap();
        let err = find(None, Some(home.path())).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        let err = find(None, None).unwrap_err().to_string();
        assert!(err.contains("HOME"), "{err}");
        let c = find(Some(&Secret::new("S3CRET")), None).unwrap();
        assert!(!format!("{c:?}").contains("S3CRET"));
    }
}
