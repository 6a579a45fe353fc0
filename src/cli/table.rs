//! How the CLI prints answers: JSON for scripts, or aligned columns for
//! people.

use serde_json::{Value, json};

/// The columns of the deploy log, whether read here or through the API.
pub const DEPLOYS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("STARTED", "started_at"),
    ("RULE", "rule"),
    ("TARGET", "target"),
    ("TAG", "tag"),
    ("STATE", "state"),
    ("IMAGE", "new_image"),
    ("MESSAGE", "message"),
];

/// The columns of the delivery log, whether read here or through the API.
pub const DELIVERIES: &[(&str, &str)] = &[
    ("EVENT", "event_seq"),
    ("SINK", "sink"),
    ("STATE", "state"),
    ("ATTEMPTS", "attempts"),
    ("UPDATED", "updated_at"),
    ("LAST ERROR", "last_error"),
];

/// Fields that count bytes: shown in human units in tables.
const BYTE_FIELDS: &[&str] = &[
    "size",
    "total_size",
    "unique_size",
    "image_size",
    "bytes_freed",
    "cached_bytes",
    "max_bytes",
];

/// `3002716` as `3.0 MB`: decimal units, as docker and podman print them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A field's value as a table shows it.
fn field(key: &str, v: &Value) -> String {
    match v.as_u64() {
        Some(n) if BYTE_FIELDS.contains(&key) => human_bytes(n),
        _ => cell(v),
    }
}

/// Prints answers: JSON as the API gave it, or aligned columns.
pub struct Output {
    pub json: bool,
}

pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

impl Output {
    /// `whole` is printed as JSON; `rows` (an array inside it, or itself)
    /// as a table of `columns`.
    pub fn table(&self, whole: &Value, rows: &Value, columns: &[(&str, &str)]) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(whole).unwrap_or_default()
            );
            return;
        }
        let rows: Vec<Vec<String>> = rows
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                columns
                    .iter()
                    .map(|(_, key)| field(key, &r[*key]))
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.len()).collect();
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("{}", padded.join("  ").trim_end());
        };
        line(columns.iter().map(|(h, _)| (*h).to_owned()).collect());
        for row in rows {
            line(row);
        }
    }

    pub fn object(&self, v: &Value) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            return;
        }
        match v.as_object() {
            Some(map) => {
                let width = map.keys().map(String::len).max().unwrap_or(0);
                for (k, v) in map {
                    let shown = match v {
                        Value::Object(_) => v.to_string(),
                        Value::Array(items) if items.iter().any(Value::is_object) => v.to_string(),
                        other => field(k, other),
                    };
                    println!("{k:<width$}  {shown}");
                }
            }
            None => println!("{}", cell(v)),
        }
    }

    /// A created or rotated secret: printed unless the caller chose it.
    pub fn secret(&self, v: &Value, chosen: bool) {
        if self.json {
            self.object(v);
        } else if chosen {
            println!("set the password of {}", cell(&v["name"]));
        } else {
            println!("{}", cell(&v["secret"]));
        }
    }

    pub fn done(&self, what: &str) {
        if self.json {
            println!("{}", json!({ "ok": true, "message": what }));
        } else {
            println!("{what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_human_units() {
        for (n, shown) in [
            (0, "0 B"),
            (999, "999 B"),
            (1000, "1.0 kB"),
            (3_002_716, "3.0 MB"),
            (999_960, "1.0 MB"),
            (1_500_000_000, "1.5 GB"),
        ] {
            assert_eq!(human_bytes(n), shown, "{n}");
        }
    }
}
