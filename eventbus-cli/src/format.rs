//! Text for operators: aligned tables, human durations, plurals, truncation and UTC times.

use std::time::Duration;

/// A duration the way an operator reads it: the two largest units (`450ms`, `12s`, `1m 35s`,
/// `2h 3m`, `3d 4h`), a smaller unit only when it isn't zero.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let Some(first) = units.iter().position(|(size, _)| secs >= *size) else {
        return format!("{secs}s");
    };
    let (size, unit) = units[first];
    let mut out = format!("{}{unit}", secs / size);
    if let Some((next, next_unit)) = units.get(first + 1) {
        let rest = (secs % size) / next;
        if rest > 0 {
            out.push_str(&format!(" {rest}{next_unit}"));
        }
    }
    out
}

/// The time from `timestamp` (seconds since the Unix epoch) to now, as a [`duration`];
/// `0ms` for a time in the future (another host's clock).
pub(crate) fn age(timestamp: f64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    duration(Duration::try_from_secs_f64(now - timestamp).unwrap_or_default())
}

/// `1 entry`, `2 entries`, `0 entries`.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// At most `max` characters of `text` on one line: line breaks become spaces, and a cut
/// ends with `…`.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A time in seconds since the Unix epoch as UTC, `2026-12-03T17:40:01Z`.
pub(crate) fn utc(timestamp: f64) -> String {
    let secs = timestamp.floor() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// How a column's cells line up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table with a header row, every column as wide as its widest cell, two spaces apart; the
/// last column is not padded (no trailing blanks).
pub(crate) struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row: one cell per column.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The lines of the table, header first.
    pub(crate) fn lines(&self) -> Vec<String> {
        let width = |i: usize, header: &str| {
            self.rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([header.chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (header, _))| width(i, header))
            .collect();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        std::iter::once(&header)
            .chain(&self.rows)
            .map(|cells| {
                let last = self.columns.len().saturating_sub(1);
                let mut line = String::new();
                for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                    let cell = cells.get(i).map_or("", String::as_str);
                    if i > 0 {
                        line.push_str("  ");
                    }
                    match align {
                        Align::Right => line.push_str(&format!("{cell:>w$}")),
                        Align::Left if i == last => line.push_str(cell),
                        Align::Left => line.push_str(&format!("{cell:<w$}")),
                    }
                }
                line.trim_end().to_string()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_an_operator_says_them() {
        let cases = [
            (0, "0ms"),
            (450, "450ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (12_400, "12s"),
            (60_000, "1m"),
            (95_000, "1m 35s"),
            (3_600_000, "1h"),
            (7_380_000, "2h 3m"),
            (7_381_000, "2h 3m"),
            (86_400_000, "1d"),
            (3 * 86_400_000 + 4 * 3_600_000 + 59_000, "3d 4h"),
        ];
        for (ms, text) in cases {
            assert_eq!(duration(Duration::from_millis(ms)), text, "{ms} ms");
        }
    }

    #[test]
    fn counts_use_the_plural_except_for_one() {
        assert_eq!(count(0, "entry", "entries"), "0 entries");
        assert_eq!(count(1, "entry", "entries"), "1 entry");
        assert_eq!(count(2, "entry", "entries"), "2 entries");
        assert_eq!(count(1, "dead letter", "dead letters"), "1 dead letter");
    }

    #[test]
    fn truncation_keeps_one_line_and_marks_the_cut() {
        assert_eq!(truncate(r#"{"a":1}"#, 10), r#"{"a":1}"#);
        assert_eq!(truncate("abcdefghij", 10), "abcdefghij");
        assert_eq!(truncate("abcdefghijk", 10), "abcdefghi…");
        assert_eq!(truncate("line\nbreak", 20), "line break");
        assert_eq!(truncate("café crème", 4), "caf…");
    }

    #[test]
    fn utc_times_are_rfc3339() {
        assert_eq!(utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000.75), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_319_601.0), "2026-12-03T17:40:01Z");
    }

    #[test]
    fn tables_align_every_column_under_its_header() {
        let mut table = Table::new(&[
            ("STREAM", Align::Left),
            ("LAG", Align::Right),
            ("CONSUMERS", Align::Left),
        ]);
        table.row(vec!["OrderCreated".into(), "7".into(), "a".into()]);
        table.row(vec!["all".into(), "1234".into(), "-".into()]);
        assert_eq!(
            table.lines(),
            [
                "STREAM         LAG  CONSUMERS",
                "OrderCreated     7  a",
                "all           1234  -",
            ]
        );
        // Width counts characters, not bytes.
        let mut table = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        table.row(vec!["é…".into(), "x".into()]);
        assert_eq!(table.lines(), ["A   B", "é…  x"]);
    }
}
