//! Tables and human-friendly numbers.

use std::time::{Duration, SystemTime};

use comfy_table::{ContentArrangement, Table, presets};

/// Rows under a header as left-aligned columns two spaces apart, with no
/// borders, one line per row and no trailing spaces (comfy-table). On a
/// terminal the table fits its width: long cells wrap inside their column.
/// Piped, nothing wraps, so each row stays one line for `grep` and `awk`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = build(header, rows).trim_fmt();
    out.push('\n');
    out
}

fn build(header: &[&str], rows: &[Vec<String>]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row.clone());
    }
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    t
}

/// `1536` MiB → `1.5 GiB`.
pub fn mib(mb: u64) -> String {
    const UNITS: [&str; 4] = ["MiB", "GiB", "TiB", "PiB"];
    let mut value = mb as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2.0` → `2`, `0.5` → `0.5`.
pub fn cpus(c: f64) -> String {
    if (c - c.round()).abs() < 1e-9 {
        format!("{c:.0}")
    } else {
        format!("{c:.2}").trim_end_matches('0').to_owned()
    }
}

/// Time since an RFC 3339 timestamp, coarsely: `45s`, `12m`, `3h`, `5d`.
pub fn age(rfc3339: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(rfc3339) else {
        return "-".into();
    };
    let d = SystemTime::now()
        .duration_since(then)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match d {
        0..=119 => format!("{d}s"),
        120..=7199 => format!("{}m", d / 60),
        7200..=172_799 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(mib(512), "512 MiB");
        assert_eq!(mib(1536), "1.5 GiB");
        assert_eq!(mib(24 * 1024), "24.0 GiB");
        assert_eq!(mib(200 * 1024), "200 GiB");
        assert_eq!(cpus(2.0), "2");
        assert_eq!(cpus(0.5), "0.5");
        assert_eq!(cpus(1.25), "1.25");
    }

    #[test]
    fn columns_line_up() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
        let t = table(&["TASK", "NODE"], &[vec!["zürich/0".into(), "-".into()]]);
        assert_eq!(t, "TASK      NODE\nzürich/0  -\n");
        assert_eq!(table(&["NAME", "ID"], &[]), "NAME  ID\n");
    }

    #[test]
    fn a_narrow_terminal_wraps_long_cells() {
        let header = [
            "TASK", "NODE", "STATE", "SINCE", "RESTARTS", "EXIT", "REASON",
        ];
        let reason = "start failed: cannot run /no/such/program: No such file or directory";
        let row = vec![
            "web/frontend/12".to_owned(),
            "node-with-a-long-name".into(),
            "failed".into(),
            "3m".into(),
            "5".into(),
            "127".into(),
            reason.into(),
        ];
        // Piped: one line per row, whatever its length.
        let piped = table(&header, std::slice::from_ref(&row));
        assert_eq!(piped.lines().count(), 2, "{piped}");
        assert!(piped.lines().nth(1).unwrap().ends_with(reason));
        // In 80 columns: every line fits, and the reason wraps within its
        // column with nothing lost.
        let mut t = build(&header, &[row]);
        t.set_width(80);
        let text = t.trim_fmt();
        assert!(text.lines().count() > 2, "{text}");
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line:?}",
                line.len()
            );
        }
        let at = text.find("REASON").unwrap();
        let column: String = text
            .lines()
            .skip(1)
            .filter_map(|l| l.get(at..))
            .collect::<Vec<_>>()
            .join(" ");
        let squeeze = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(squeeze(&column), squeeze(reason), "\n{text}");
    }
}
