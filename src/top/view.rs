//! Drawing one frame of `top` from the last two readings.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;
use serde_json::Value;

use super::fetch::{latency_p99, rate, u, Reading};
use super::Screen;

/// `1234567` → `1,234,567`.
pub fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt_int(n: Option<u64>) -> String {
    n.map_or("–".into(), int)
}

fn per_s(r: Option<f64>) -> String {
    match r {
        None => "–".into(),
        Some(x) if x > 0.0 && x < 10.0 => format!("{x:.1}"),
        Some(x) => int(x.round() as u64),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn micros(us: u64) -> String {
    match us {
        u64::MAX => "> 5 s".into(),
        0..1_000 => format!("≤ {us} µs"),
        1_000..1_000_000 => format!("≤ {} ms", us as f64 / 1000.0),
        _ => format!("≤ {} s", us as f64 / 1e6),
    }
}

fn uptime(s: f64) -> String {
    let s = s as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s / 60 % 60),
    }
}

/// `label value` pairs, the label dim.
fn pairs(items: Vec<(&str, String)>) -> Line<'static> {
    let mut spans = Vec::new();
    for (label, value) in items {
        spans.push(Span::styled(
            format!("{label:>12} "),
            Style::default().fg(Color::DarkGray),
        ));
        spans.push(Span::styled(
            format!("{value:<12}"),
            Style::default().add_modifier(Modifier::BOLD),
        ));
    }
    Line::from(spans)
}

/// Every scalar of a JSON object as `key value` (nested keys dotted), for sections whose fields
/// `top` does not know (the bus, presence).
pub fn flatten(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &key, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(v, &format!("{prefix}[{i}]"), out);
            }
        }
        Value::Number(n) => out.push((prefix.to_string(), n.as_u64().map_or(n.to_string(), int))),
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Bool(b) => out.push((prefix.to_string(), b.to_string())),
        Value::Null => out.push((prefix.to_string(), "–".into())),
    }
}

fn summary(now: &Reading, before: Option<&Reading>) -> Vec<Line<'static>> {
    let s = &now.stats;
    let sum = |k: &str| u(s, &["summary", k]);
    let r = |k: &str| rate(now, before, &["summary", k]);
    let p99 = before
        .and_then(|b| latency_p99(s, &b.stats))
        .map_or("–".into(), micros);
    vec![
        pairs(vec![
            ("connections", opt_int(sum("connections"))),
            ("open", opt_int(sum("open"))),
            ("handshaking", opt_int(sum("handshaking"))),
            ("connects/s", per_s(r("accepted"))),
        ]),
        pairs(vec![
            ("memberships", opt_int(sum("memberships"))),
            ("joins/s", per_s(r("joins"))),
            ("topics", opt_int(u(s, &["topics"]))),
            ("joins", opt_int(sum("joins"))),
        ]),
        pairs(vec![
            ("broadcasts/s", per_s(r("broadcasts"))),
            ("deliveries/s", per_s(r("deliveries"))),
            ("latency p99", p99),
            ("deliveries", opt_int(sum("deliveries"))),
        ]),
        pairs(vec![
            (
                "user/conn",
                sum("user_bytes_per_connection").map_or("–".into(), bytes),
            ),
            (
                "kernel/sock",
                sum("kernel_bytes_per_connection_estimate").map_or("n/a".into(), bytes),
            ),
            (
                "resident",
                u(s, &["process", "resident_bytes"]).map_or("–".into(), bytes),
            ),
            (
                "send queue",
                sum("send_queue_bytes").map_or("–".into(), bytes),
            ),
        ]),
        pairs(vec![
            ("slow closes", opt_int(sum("slow_consumer_closes"))),
            ("mem pauses", opt_int(sum("memory_pauses"))),
            ("broadcasts", opt_int(sum("broadcasts"))),
            ("dropped", opt_int(sum("deliveries_dropped"))),
        ]),
    ]
}

fn workers_table<'a>(now: &'a Reading, before: Option<&'a Reading>) -> Table<'a> {
    let header = Row::new(
        [
            "worker",
            "conns",
            "open",
            "handshake",
            "accepted",
            "joins",
            "members",
            "topics",
            "deliv/s",
            "send queue",
            "slow closes",
        ]
        .map(|h| Cell::from(h).style(Style::default().fg(Color::DarkGray))),
    );
    let empty = Vec::new();
    let workers = now.stats["workers"].as_array().unwrap_or(&empty);
    let rows = workers.iter().enumerate().map(|(i, w)| {
        let deliv = before.and_then(|b| {
            let dt = now.at.duration_since(b.at).as_secs_f64();
            let prev = u(&b.stats["workers"][i], &["stats", "deliveries"])?;
            let cur = u(w, &["stats", "deliveries"])?;
            (dt > 0.0 && cur >= prev).then(|| (cur - prev) as f64 / dt)
        });
        Row::new(vec![
            opt_int(u(w, &["worker"])),
            opt_int(u(w, &["connections"])),
            opt_int(u(w, &["open"])),
            opt_int(u(w, &["handshaking"])),
            opt_int(u(w, &["stats", "accepted"])),
            opt_int(u(w, &["stats", "joins"])),
            opt_int(u(w, &["memory", "memberships"])),
            opt_int(u(w, &["memory", "topics"])),
            per_s(deliv),
            u(w, &["memory", "send_queue_bytes"]).map_or("–".into(), bytes),
            opt_int(u(w, &["stats", "send_queue_overflows"])),
        ])
    });
    Table::new(rows, [Constraint::Min(8); 11])
        .header(header)
        .block(Block::bordered().title(" workers "))
}

pub fn draw(f: &mut Frame, screen: &Screen) {
    let now = screen.now.as_ref();
    let mut title = vec![Span::styled(
        " ringgate top ",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    title.push(Span::raw(format!("· {} ", screen.admin)));
    if let Some(n) = now {
        title.push(Span::raw(format!(
            "· v{} · up {} · {} workers ",
            n.stats["process"]["version"].as_str().unwrap_or("?"),
            uptime(n.stats["process"]["uptime_seconds"].as_f64().unwrap_or(0.0)),
            n.stats["workers"].as_array().map_or(0, Vec::len),
        )));
    }
    title.push(Span::styled(
        "· q quits",
        Style::default().fg(Color::DarkGray),
    ));
    let sections: Vec<(&str, &Value)> = ["bus", "presence"]
        .into_iter()
        .filter_map(|k| {
            now.and_then(|n| n.stats.get(k))
                .filter(|v| !v.is_null())
                .map(|v| (k, v))
        })
        .collect();
    let workers = now.map_or(0, |n| n.stats["workers"].as_array().map_or(0, Vec::len));
    let mut constraints = vec![
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(7),
        Constraint::Length(workers as u16 + 3),
    ];
    constraints.extend(sections.iter().map(|_| Constraint::Min(3)));
    constraints.push(Constraint::Min(0));
    let areas = Layout::vertical(constraints).split(f.area());
    f.render_widget(Paragraph::new(Line::from(title)), areas[0]);
    let status = match &screen.error {
        Some(e) => Line::styled(format!(" {e}"), Style::default().fg(Color::Red)),
        None if now.is_some() => Line::styled(" live", Style::default().fg(Color::Green)),
        None => Line::raw(" waiting for the first reading…"),
    };
    f.render_widget(Paragraph::new(status), areas[1]);
    let Some(now) = now else { return };
    let before = screen.before.as_ref();
    f.render_widget(
        Paragraph::new(summary(now, before)).block(Block::bordered().title(" totals ")),
        areas[2],
    );
    f.render_widget(workers_table(now, before), areas[3]);
    for (i, (name, value)) in sections.iter().enumerate() {
        let mut kv = Vec::new();
        flatten(value, "", &mut kv);
        let text: Vec<Span> = kv
            .into_iter()
            .flat_map(|(k, v)| {
                [
                    Span::styled(format!("{k} "), Style::default().fg(Color::DarkGray)),
                    Span::styled(
                        format!("{v}   "),
                        Style::default().add_modifier(Modifier::BOLD),
                    ),
                ]
            })
            .collect();
        f.render_widget(
            Paragraph::new(Line::from(text))
                .wrap(Wrap { trim: true })
                .block(Block::bordered().title(format!(" {name} "))),
            areas[4 + i],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1000), "1,000");
        assert_eq!(int(1234567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(micros(250), "≤ 250 µs");
        assert_eq!(micros(u64::MAX), "> 5 s");
    }

    #[test]
    fn unknown_sections_flatten_to_key_value_pairs() {
        let v =
            serde_json::json!({"state": "connected", "published": 1200, "shards": [{"up": true}]});
        let mut out = Vec::new();
        flatten(&v, "", &mut out);
        assert_eq!(
            out,
            vec![
                ("published".to_string(), "1,200".to_string()),
                ("shards[0].up".to_string(), "true".to_string()),
                ("state".to_string(), "connected".to_string()),
            ]
        );
    }
}
