//! `ringgate top`: the dashboard's figures in a terminal, refreshed every second — totals and
//! rates, a row per worker, and the `bus` / `presence` sections of `/api/stats` when the gateway
//! has them (shown as the key/number pairs they carry). Reads only the admin API, so it works
//! against any running gateway it can reach. Quits on `q`, `Esc` or Ctrl-C and restores the
//! terminal (also on a panic: ratatui's hook).

mod fetch;
mod view;

use std::time::{Duration, Instant};

use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

/// Time between polls: a second, like the dashboard.
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The gateway's admin port (its `admin_listen`).
    #[arg(long, default_value = "http://127.0.0.1:4001")]
    pub admin: String,
    /// The admin API key, when the gateway has one (better: the RINGGATE_API_KEY environment
    /// variable, which other users cannot read in the process list).
    #[arg(long, env = "RINGGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// What the screen shows: the last good reading, the one before (for rates), and the last error.
pub struct Screen {
    pub admin: String,
    pub now: Option<fetch::Reading>,
    pub before: Option<fetch::Reading>,
    pub error: Option<String>,
}

pub fn run(args: TopArgs) -> Result<(), String> {
    use std::io::IsTerminal;
    let (addr, host) = fetch::parse_admin(&args.admin)?;
    if !std::io::stdout().is_terminal() {
        return Err("top draws on a terminal: stdout is not one".into());
    }
    let mut screen = Screen {
        admin: host.clone(),
        now: None,
        before: None,
        error: None,
    };
    let mut terminal = ratatui::try_init().map_err(|e| format!("terminal: {e}"))?;
    let result = (|| -> Result<(), String> {
        let mut next_poll = Instant::now();
        loop {
            if Instant::now() >= next_poll {
                match fetch::stats(addr, &host, args.api_key.as_deref()) {
                    Ok(stats) => {
                        screen.before = screen.now.take();
                        screen.now = Some(fetch::Reading {
                            at: Instant::now(),
                            stats,
                        });
                        screen.error = None;
                    }
                    Err(e) => screen.error = Some(e),
                }
                next_poll = Instant::now() + REFRESH;
                terminal
                    .draw(|f| view::draw(f, &screen))
                    .map_err(|e| e.to_string())?;
            }
            let wait = next_poll.saturating_duration_since(Instant::now());
            if event::poll(wait).map_err(|e| e.to_string())? {
                match event::read().map_err(|e| e.to_string())? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => {
                        let ctrl_c = k.modifiers.contains(KeyModifiers::CONTROL)
                            && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('C'));
                        if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                            return Ok(());
                        }
                    }
                    Event::Resize(..) => {
                        terminal
                            .draw(|f| view::draw(f, &screen))
                            .map_err(|e| e.to_string())?;
                    }
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    result
}
