//! How answers are printed: the API's JSON as it came (`--json`), or text in aligned columns.

use rota::status::fmt_time;
use serde_json::Value;

/// The API's JSON as it came, pretty-printed (`--json`).
pub(super) fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

pub(super) fn print_value(json: bool, value: &Value, render: fn(&Value) -> String) {
    if json {
        print_json(value);
    } else {
        print!("{}", render(value));
    }
}

/// A JSON value as a table cell: strings bare, null as `-`, arrays comma-separated.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub(super) fn yes(v: &Value) -> String {
    if v.as_bool() == Some(true) {
        "yes"
    } else {
        "-"
    }
    .into()
}

/// Left-aligned columns as wide as their widest cell, two spaces apart.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A column of a table of a JSON list: its header, and how to get its cell from one item.
type Column<'a> = (&'a str, fn(&Value) -> String);

pub(super) fn columns(list: &Value, columns: &[Column]) -> String {
    let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, cell)| cell(item)).collect())
        .collect();
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    table(&header, &rows)
}

pub(super) fn time_of(v: &Value) -> String {
    v.as_i64().map_or("-".into(), fmt_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_on_their_widest_cell() {
        let rows = vec![
            vec!["node-10".into(), "alive".into(), "".into()],
            vec!["n1".into(), "dead".into(), "x y".into()],
        ];
        assert_eq!(
            table(&["ID", "STATE", "NOTE"], &rows),
            "ID       STATE  NOTE\nnode-10  alive\nn1       dead   x y\n"
        );
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
        // Widths count characters, not bytes.
        assert_eq!(
            table(&["N", "X"], &[vec!["é".into(), "1".into()]]),
            "N  X\né  1\n"
        );
    }
}
