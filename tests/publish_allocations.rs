//! What a publish costs the allocator: a broadcast is encoded into one buffer (plus the shared
//! count `bytes` keeps beside it), and handing it to a worker (a clone) allocates nothing. A
//! publisher of many small broadcasts (an admin request for a thousand topics, a bus batch) spends
//! its user time here, and the frames are freed on another thread, so each allocation counts.
//!
//! Counted with a global allocator that counts this thread's allocations only (the test harness
//! runs other threads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringgate::phoenix::broadcast::{encode, encoding};
use ringgate::phoenix::serializer::Payload;
use ringgate::phoenix::Vsn;
use serde_json::value::RawValue;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// thread-local `Cell` with a const initialiser, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn a_broadcast_is_one_buffer_and_handing_it_to_workers_allocates_nothing() {
    let payload = RawValue::from_string(format!(r#"{{"body":"{}"}}"#, "x".repeat(200))).unwrap();
    let payload = Payload::Json(&payload);
    // The first publish on a thread sizes its body scratch.
    drop(encode("rooms:lobby", "new_msg", payload));

    let mut b = None;
    let n = allocations_in(|| b = Some(encode("rooms:lobby", "new_msg", payload)));
    let b = b.unwrap();
    assert_eq!(n, 2, "the frames' buffer and its shared count");

    let n = allocations_in(|| {
        let copies: [_; 8] = std::array::from_fn(|_| b.clone());
        for c in &copies {
            assert_eq!(c.topic(), "rooms:lobby");
            assert!(c.frame(encoding(Vsn::V1)).is_some());
        }
    });
    assert_eq!(n, 0, "a copy per worker shares the bytes");
}
