//! What the operator sees: the result on standard output (text or `--json`),
//! logs on standard error, and the error line `main` prints.

use std::io::Write;

use serde::Serialize;

/// Prints a command's result.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    /// JSON output if `json`, else human text.
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    /// Prints `value` as one JSON document, or the text `human` renders.
    pub fn result<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut stdout, value)?;
            writeln!(stdout)?;
        } else {
            let text = human();
            if !text.is_empty() {
                write!(stdout, "{text}")?;
                if !text.ends_with('\n') {
                    writeln!(stdout)?;
                }
            }
        }
        stdout.flush()?;
        Ok(())
    }
}

/// Human-readable byte count (binary units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `1 chunk`, `2 chunks`, `0 chunks`: a count with its noun, for every
/// message that counts something. Nouns whose plural is not `+s` are listed.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        return format!("1 {noun}");
    }
    let plural = match noun {
        "entry" => "entries".to_string(),
        "priority" => "priorities".to_string(),
        "policy" => "policies".to_string(),
        "this" => "these".to_string(),
        _ if noun.ends_with('s') || noun.ends_with('x') || noun.ends_with("ch") => {
            format!("{noun}es")
        }
        _ => format!("{noun}s"),
    };
    format!("{n} {plural}")
}

/// Renders rows as an aligned text table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        line.trim_end().to_string() + "\n"
    };
    let mut out = render(header.to_vec());
    for row in rows {
        out.push_str(&render(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bytes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1u64, "chunk"), "1 chunk");
        assert_eq!(count(0u64, "chunk"), "0 chunks");
        assert_eq!(count(2u64, "consumer"), "2 consumers");
        assert_eq!(count(1u64, "consumer"), "1 consumer");
        assert_eq!(count(3u64, "policy"), "3 policies");
        assert_eq!(count(2u64, "vhost"), "2 vhosts");
        assert_eq!(count(2u64, "match"), "2 matches");
        assert_eq!(count(1u32, "message"), "1 message");
    }

    #[test]
    fn aligns_tables() {
        let t = table(
            &["ID", "NODE"],
            &[
                vec!["a".into(), "rabbit@x".into()],
                vec!["long-id".into(), "r".into()],
            ],
        );
        assert_eq!(t, "ID       NODE\na        rabbit@x\nlong-id  r\n");
    }
}
