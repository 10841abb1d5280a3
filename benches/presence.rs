//! Presence: heap bytes per tracked entry, and the server-side time to build a joiner's
//! `presence_state` frame in rooms of 10k and 50k members. In-process, on the real table
//! (`presence::table`) and the real frame encoder; no network.
//!
//! `cargo bench --bench presence -- [--rooms 10000,50000] [--reps 21]`
//!
//! - Bytes per entry: a counting allocator measures the heap the table holds after tracking N
//!   entries (key `user<i>`, meta fields `{"name":"User <i>","status":"online"}`), divided by N.
//!   Allocator overhead (malloc's per-chunk header, ~8–16 B) is not included.
//! - Time to presence_state: `track` (new entry + the state as of the last diff) plus the
//!   Phoenix frame and the WebSocket frame around it, i.e. everything between "join accepted"
//!   and "bytes queued". Two cases: *cold* (a diff was flushed since the previous joiner, so the
//!   state is rendered again: the worst case, every join of a churning room) and *warm* (another
//!   joiner of the same batch rendered it: the storm case). Median [min–max] over `--reps`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use ringgate::phoenix::broadcast::ws_frame;
use ringgate::phoenix::serializer::{message_frame, FrameKind};
use ringgate::phoenix::Vsn;
use ringgate::presence::table::{owner, PresenceTable};
use serde_json::{json, Map, Value};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `alloc` above with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p`/`l` come from this allocator; forwarded as is.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn fields(i: usize) -> Map<String, Value> {
    match json!({"name": format!("User {i}"), "status": "online"}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn spread(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:.2} [{:.2}–{:.2}]", v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let rooms: Vec<usize> = arg("--rooms", "10000,50000")
        .split(',')
        .map(|s| s.parse().expect("--rooms: numbers"))
        .collect();
    let reps: usize = arg("--reps", "21").parse().expect("--reps: a number");
    println!("| members | heap B/entry | state bytes | cold ms (median [min–max]) | warm ms | cold/warm |");
    println!("|---|---|---|---|---|---|");
    for &n in &rooms {
        let table = PresenceTable::new(64, 1, n + 3, 512);
        let before = LIVE.load(Ordering::Relaxed);
        for i in 0..n {
            table
                .track(
                    "rooms:big",
                    owner(0, i as u32),
                    Some(&format!("user{i}")),
                    &fields(i),
                    "1764750000",
                )
                .expect("room has space");
        }
        let mut flushed = Vec::new();
        table.take_dirty(&mut flushed);
        drop(flushed);
        let per_entry = (LIVE.load(Ordering::Relaxed) - before) as f64 / n as f64;
        let joiner = |i: usize| {
            let t0 = Instant::now();
            let tracked = table
                .track(
                    "rooms:big",
                    owner(1, i as u32),
                    Some(&format!("j{i}")),
                    &fields(i),
                    "1764750000",
                )
                .expect("room has space");
            let body = message_frame(
                Vsn::V2,
                Some("3"),
                None,
                "rooms:big",
                "presence_state",
                tracked.state.as_bytes(),
            );
            let frame = ws_frame(FrameKind::Text, &body);
            (t0.elapsed().as_secs_f64() * 1e3, frame.len())
        };
        let (mut cold, mut warm, mut state_bytes) = (Vec::new(), Vec::new(), 0);
        for r in 0..reps {
            // Another member changes and its diff goes out: the next state is rendered again.
            let churn = owner(2, r as u32);
            table
                .track("rooms:big", churn, Some("churn"), &fields(r), "1764750000")
                .expect("room has space");
            let mut sink = Vec::new();
            table.take_dirty(&mut sink);
            let (ms, len) = joiner(2 * r);
            cold.push(ms);
            state_bytes = len;
            let (ms, _) = joiner(2 * r + 1);
            warm.push(ms);
            table.untrack("rooms:big", owner(1, (2 * r) as u32));
            table.untrack("rooms:big", owner(1, (2 * r + 1) as u32));
            table.untrack("rooms:big", churn);
        }
        let ratio = {
            let mut c = cold.clone();
            let mut w = warm.clone();
            c.sort_by(f64::total_cmp);
            w.sort_by(f64::total_cmp);
            c[c.len() / 2] / w[w.len() / 2]
        };
        println!(
            "| {n} | {per_entry:.0} | {state_bytes} | {} | {} | {ratio:.1}× |",
            spread(cold),
            spread(warm)
        );
    }
}
