//! RabbitMQ version strings as nodes report them (`3.10.8`, `4.3.0-rc.1`).

/// True when `a` is an older version than `b`, comparing the leading
/// numeric parts (`3.10.8` < `3.11.0`; `unknown` is older than nothing).
pub fn older(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .map_while(|p| p.parse().ok())
            .collect()
    };
    let (a, b) = (parse(a), parse(b));
    !a.is_empty() && a < b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(older("3.9.29", "3.10.8"));
        assert!(!older("3.10.8", "3.10.8"));
        assert!(!older("3.11.0", "3.10.8"));
        assert!(older("3.10.8", "3.10.10"));
        assert!(older("4.2.9", "4.3.0"));
        assert!(!older("4.3.0-rc.1", "4.3.0"));
        assert!(!older("unknown", "4.3.0"));
    }
}
