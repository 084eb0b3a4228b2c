//! Drawing `gort top` (ratatui): the process list, or one process in detail. Fits 80×24.

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph, Row, Table, TableState},
};

use super::{GoroutineLine, model::Model};

fn seconds(s: f64) -> String {
    if s == 0.0 {
        "0".into()
    } else if s >= 1.0 {
        format!("{s:.2}s")
    } else if s >= 1e-3 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{:.0}µs", s * 1e6)
    }
}

fn rate(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.0}k", x / 1e3)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn header(m: &Model) -> Line<'static> {
    let status = match &m.error {
        Some(e) => format!(" — {e}"),
        None => String::new(),
    };
    // Under a budget that samples, the rates are estimates.
    let sampling = match m.current.sampling_ratio {
        Some(r) if r < 1.0 => format!(" — sampled: probes in {:.0} %, estimates", r * 100.0),
        _ => String::new(),
    };
    Line::from(format!(
        "gort top — {} processes — sort: {}{} — events lost {}{sampling}{status}",
        m.current.processes.len(),
        m.sort.name(),
        if m.filter.is_empty() && !m.editing_filter {
            String::new()
        } else {
            format!(
                " — filter: {}{}",
                m.filter,
                if m.editing_filter { "_" } else { "" }
            )
        },
        m.current.events_lost,
    ))
    .style(Style::new().add_modifier(Modifier::BOLD))
}

pub fn draw(f: &mut Frame, m: &Model, goroutines: &[GoroutineLine]) {
    if m.detail.is_some() {
        draw_detail(f, m, goroutines);
    } else {
        draw_list(f, m);
    }
}

fn draw_list(f: &mut Frame, m: &Model) {
    let [top, list, reasons, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header(m)), top);

    let rows = m.rows();
    let table = Table::new(
        rows.iter().map(|r| {
            Row::new(vec![
                r.pid.to_string(),
                if r.exited {
                    format!("{} (exited)", r.service)
                } else {
                    r.service.clone()
                },
                r.goroutines.to_string(),
                format!("{:.2}", r.blocked),
                rate(r.parks),
                format!("{:.1}", r.gc_per_min),
                seconds(r.stw),
                r.leaks.to_string(),
            ])
        }),
        [
            Constraint::Length(7),
            Constraint::Min(14),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(5),
        ],
    )
    .header(
        Row::new(vec![
            "PID", "SERVICE", "GOROUT", "BLOCKED", "PARKS/s", "GC/min", "STW/s", "LEAKS",
        ])
        .style(Style::new().add_modifier(Modifier::REVERSED)),
    )
    .row_highlight_style(Style::new().add_modifier(Modifier::BOLD))
    .highlight_symbol(">");
    let mut state = TableState::default().with_selected(Some(m.selected));
    f.render_stateful_widget(table, list, &mut state);

    // Blocking by reason over every process shown.
    let mut by_reason: Vec<(String, f64, f64)> = Vec::new();
    let visible: Vec<u32> = rows.iter().map(|r| r.pid).collect();
    let mut detail = Model {
        previous: m.previous.clone(),
        current: m.current.clone(),
        ..Model::default()
    };
    for pid in visible {
        detail.detail = Some(pid);
        for r in detail.reason_rows() {
            match by_reason.iter_mut().find(|(n, _, _)| *n == r.reason) {
                Some(e) => {
                    e.1 += r.blocked;
                    e.2 += r.parks;
                }
                None => by_reason.push((r.reason, r.blocked, r.parks)),
            }
        }
    }
    by_reason.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let table = Table::new(
        by_reason.iter().take(6).map(|(reason, blocked, parks)| {
            Row::new(vec![reason.clone(), format!("{blocked:.2}"), rate(*parks)])
        }),
        [
            Constraint::Min(24),
            Constraint::Length(9),
            Constraint::Length(9),
        ],
    )
    .header(
        Row::new(vec!["WAIT REASON (all shown)", "BLOCKED", "PARKS/s"])
            .style(Style::new().add_modifier(Modifier::REVERSED)),
    )
    .block(
        Block::new()
            .borders(Borders::TOP)
            .title("blocked: goroutines blocked on average"),
    );
    f.render_widget(table, reasons);
    f.render_widget(
        Paragraph::new("q quit  ↑↓ select  Enter details  s sort  / filter  Esc clear"),
        keys,
    );
}

fn draw_detail(f: &mut Frame, m: &Model, goroutines: &[GoroutineLine]) {
    let Some(p) = m.detail_process() else {
        f.render_widget(Paragraph::new("the process is gone (Esc: back)"), f.area());
        return;
    };
    let [top, reasons, sites, grs, gc, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Min(4),
        Constraint::Length(2),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(
        Paragraph::new(Line::from(format!(
            "pid {} {}{} — {} goroutines (+{} runtime) — {}",
            p.pid,
            p.service,
            if p.exited { " (exited)" } else { "" },
            p.goroutines_user,
            p.goroutines_system,
            p.exe,
        )))
        .style(Style::new().add_modifier(Modifier::BOLD)),
        top,
    );
    let bold = Style::new().add_modifier(Modifier::REVERSED);
    let table = Table::new(
        m.reason_rows().into_iter().take(6).map(|r| {
            Row::new(vec![
                r.reason,
                format!("{:.2}", r.blocked),
                rate(r.parks),
                r.parked_now.to_string(),
            ])
        }),
        [
            Constraint::Min(24),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(vec!["WAIT REASON", "BLOCKED", "PARKS/s", "PARKED NOW"]).style(bold));
    f.render_widget(table, reasons);

    let table = Table::new(
        m.site_rows().into_iter().take(5).map(|(s, total_ns)| {
            Row::new(vec![
                s.site,
                s.reason,
                format!("{:.2}", s.blocked),
                seconds(total_ns as f64 / 1e9),
            ])
        }),
        [
            Constraint::Min(30),
            Constraint::Length(16),
            Constraint::Length(8),
            Constraint::Length(9),
        ],
    )
    .header(Row::new(vec!["CALL SITE", "REASON", "BLOCKED", "TOTAL"]).style(bold));
    f.render_widget(table, sites);

    let table = Table::new(
        goroutines.iter().map(|g| {
            Row::new(vec![
                g.goid.to_string(),
                g.state.clone(),
                seconds(g.blocked_ns as f64 / 1e9),
                g.created_by.clone(),
            ])
        }),
        [
            Constraint::Length(8),
            Constraint::Length(22),
            Constraint::Length(9),
            Constraint::Min(20),
        ],
    )
    .header(Row::new(vec!["GOID", "STATE", "BLOCKED", "CREATED BY"]).style(bold));
    f.render_widget(table, grs);

    let pauses: Vec<String> = p
        .pauses
        .iter()
        .filter(|x| x.count > 0)
        .map(|x| {
            format!(
                "{} {}× avg {}",
                x.reason,
                x.count,
                seconds(x.total_ns as f64 / x.count as f64 / 1e9)
            )
        })
        .collect();
    let leaks: Vec<String> = p
        .leaks
        .iter()
        .map(|l| format!("{} in {} ({})", l.goroutines, l.created_by, l.reason))
        .collect();
    f.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "GC {} cycles; STW: {}",
                p.gc_cycles,
                pauses.join(", ")
            )),
            Line::from(if leaks.is_empty() {
                "leak suspects: none".to_string()
            } else {
                format!("leak suspects: {}", leaks.join("; "))
            }),
        ]),
        gc,
    );
    f.render_widget(Paragraph::new("Esc back  q quit"), keys);
}
