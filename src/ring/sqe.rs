//! The one place submission entries are built. Each constructor names the kernel version that has
//! the operation, and states what memory the entry points to and who keeps it alive.
//!
//! An entry is an [`Sqe`], which only this module can make. A constructor whose entry hands the
//! kernel a pointer is `unsafe`: its `# Safety` section is the contract the caller keeps (the memory
//! stays valid until the kernel is done with it). Every other constructor is safe, so pushing an
//! `Sqe` (`Ring::push`) is safe.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::token::{Op, Token};

/// A submission entry built by this module (see the module docs for why that matters).
#[derive(Clone)]
pub struct Sqe(pub(super) squeue::Entry);

impl std::fmt::Debug for Sqe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn tag(entry: squeue::Entry, op: Op, slot: u32, gen: u32) -> Sqe {
    Sqe(entry.user_data(Token::new(op, slot, gen).encode()))
}

fn global(entry: squeue::Entry, op: Op) -> Sqe {
    Sqe(entry.user_data(Token::global(op).encode()))
}

/// Multishot accept into an auto-allocated fixed-file slot (5.19). Each CQE's `res` is the slot.
/// The multishot ends without `F_MORE` on error, notably `ENFILE` when the table is full. `gen`
/// (the token's generation) tells this request's completions from an earlier one's.
///
/// Points to no memory.
pub fn accept_multi(listen_fd: RawFd, gen: u32) -> Sqe {
    let e = opcode::AcceptMulti::new(types::Fd(listen_fd))
        .allocate_file_index(true)
        .build();
    tag(e, Op::Accept, 0, gen)
}

/// Cancel the accept request of generation `gen` (5.5), by its token.
pub fn cancel_accept(gen: u32) -> Sqe {
    let e = opcode::AsyncCancel::new(Token::new(Op::Accept, 0, gen).encode()).build();
    global(e, Op::Cancel)
}

/// Cancel every request of the ring (5.19, `IORING_ASYNC_CANCEL_ANY`): at exit, so that nothing the
/// kernel may still write or read outlives the memory it points to.
pub fn cancel_everything() -> Sqe {
    let e = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build();
    global(e, Op::Cancel)
}

/// Multishot readiness poll on a connection (5.13): the cheap way for an idle connection to wait,
/// one io_kiocb (~256 B) in the kernel and no buffer.
pub fn poll_readable(slot: u32, gen: u32) -> Sqe {
    let e = opcode::PollAdd::new(types::Fixed(slot), libc::POLLIN as u32)
        .multi(true)
        .build();
    tag(e, Op::Poll, slot, gen)
}

/// One-shot receive into a buffer the kernel picks from group `bgid` (5.19 for ring-provided
/// buffers). `MSG_DONTWAIT` turns a spurious wake-up into `EAGAIN` instead of a parked receive
/// that would hold kernel memory.
pub fn recv_once(slot: u32, gen: u32, bgid: u16) -> Sqe {
    // No pointer: the kernel picks a buffer of group `bgid`, which the buffer ring owns.
    let e = opcode::Recv::new(types::Fixed(slot), std::ptr::null_mut(), 0)
        .buf_group(bgid)
        .flags(libc::MSG_DONTWAIT)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT);
    tag(e, Op::Recv, slot, gen)
}

/// Multishot receive with buffer select (6.0): one CQE per read, ~864 B of kernel memory while armed.
pub fn recv_multi(slot: u32, gen: u32, bgid: u16) -> Sqe {
    let e = opcode::RecvMulti::new(types::Fixed(slot), bgid).build();
    tag(e, Op::Recv, slot, gen)
}

/// Send `len` bytes at `ptr` (5.6). `MSG_NOSIGNAL`: a peer that vanished is an `EPIPE` result, not
/// a signal that kills the process.
///
/// # Safety
/// `len` bytes at `ptr` stay valid and unchanged until this entry's completion (the gateway keeps
/// them in its frame table, the load generator in its send table, and each releases them only on
/// that CQE — or never, if the ring is closed with the send still in flight).
pub unsafe fn send(slot: u32, gen: u32, ptr: *const u8, len: u32) -> Sqe {
    let e = opcode::Send::new(types::Fixed(slot), ptr, len)
        .flags(libc::MSG_NOSIGNAL)
        .build();
    tag(e, Op::Send, slot, gen)
}

/// `sendmsg` of `msg`'s iovec (5.3): several queued frames in one send. `MSG_NOSIGNAL` as `send`.
///
/// # Safety
/// `msg`, its iovec array and every buffer the iovec points to stay valid and unchanged until this
/// entry's completion.
pub unsafe fn send_msg(slot: u32, gen: u32, msg: *const libc::msghdr) -> Sqe {
    let e = opcode::SendMsg::new(types::Fixed(slot), msg)
        .flags(libc::MSG_NOSIGNAL as u32)
        .build();
    tag(e, Op::Send, slot, gen)
}

/// `shutdown(SHUT_WR)` (5.11): our side is done; the peer sees EOF after our close frame.
pub fn shutdown_write(slot: u32, gen: u32) -> Sqe {
    let e = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_WR).build();
    tag(e, Op::Shutdown, slot, gen)
}

/// Cancel the request of one connection that carries token `op` (5.5). The cancelled request still
/// posts its own CQE (`ECANCELED`), which is when its buffer or frame is released.
///
/// Cancelling by `user_data` finds a poll through the kernel's hash of armed polls, in O(1).
/// Cancelling by fd (`IORING_ASYNC_CANCEL_FD`) walks every armed poll of the ring instead: with
/// N connections closing that is O(N²), measured as 90% of a worker's time when 15k clients left.
pub fn cancel_op(op: Op, slot: u32, gen: u32) -> Sqe {
    let e = opcode::AsyncCancel::new(Token::new(op, slot, gen).encode()).build();
    tag(e, Op::Cancel, slot, gen)
}

/// Cancel every request on an ordinary fd (5.19): the listener's accept when draining.
pub fn cancel_fd(fd: RawFd) -> Sqe {
    let e = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all()).build();
    global(e, Op::Cancel)
}

/// `getsockopt(SOL_SOCKET, SO_PEERNAME)` on a direct descriptor (6.7, `SOCKET_URING_OP_GETSOCKOPT`):
/// direct descriptors have no fd for `getpeername(2)`. The kernel refuses a length longer than the
/// address, so `len` is the exact size for the listener's family.
///
/// # Safety
/// `buf` stays valid, and is neither read nor written by us, until this entry's completion (the
/// worker holds it in a box keyed by slot until then).
pub unsafe fn peer_name(slot: u32, gen: u32, buf: *mut libc::sockaddr_storage, len: u32) -> Sqe {
    let e = opcode::GetSockOpt::new(
        types::Fixed(slot),
        libc::SOL_SOCKET as u32,
        libc::SO_PEERNAME as u32,
        buf.cast(),
        len,
    )
    .build();
    tag(e, Op::PeerName, slot, gen)
}

/// Close a fixed-file slot (5.15 for direct descriptors); the slot is free once this completes.
pub fn close_slot(slot: u32, gen: u32) -> Sqe {
    tag(
        opcode::Close::new(types::Fixed(slot)).build(),
        Op::Close,
        slot,
        gen,
    )
}

/// A relative timeout (5.4); completes with `ETIME` when it fires.
///
/// # Safety
/// `ts` stays valid until the entry is submitted (the kernel copies it then); the worker keeps its
/// tick timespec boxed in a field for its whole life.
pub unsafe fn tick(ts: *const types::Timespec) -> Sqe {
    let e = opcode::Timeout::new(ts).build();
    global(e, Op::Tick)
}

/// Multishot readiness poll on an ordinary fd (the inbox eventfd).
pub fn poll_fd(fd: RawFd) -> Sqe {
    let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
        .multi(true)
        .build();
    global(e, Op::Inbox)
}

// ---- client side (the load generator) ------------------------------------------------------
//
// A client connection is set up by one chain of linked entries: socket → options → bind →
// connect. `IO_LINK` runs each step only if the previous one succeeded; `SKIP_SUCCESS` makes the
// intermediate steps post a completion only when they fail (a failed step's successors complete
// with `ECANCELED`). The final `connect` always posts one completion, so a set-up attempt is over
// exactly when its `Op::Connect` completion arrives.

/// Flags of every step of the set-up chain except the last.
fn chained(entry: Sqe) -> Sqe {
    Sqe(entry
        .0
        .flags(squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS))
}

/// An IPv4 TCP socket created straight into fixed-file `slot` (5.19 for `file_index`): a direct
/// descriptor, no entry in the process fd table. A socket already in the slot is replaced, so the
/// caller only reuses a slot after its `close_slot` completed. Chained (see above).
///
/// Points to no memory.
pub fn socket_direct(slot: u32, gen: u32) -> Sqe {
    let dest = types::DestinationSlot::try_from_slot_target(slot).expect("slot within the table");
    let e = opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
        .file_index(Some(dest))
        .build();
    chained(tag(e, Op::Socket, slot, gen))
}

/// `setsockopt(level, name, value)` for an `int` option on fixed `slot`, through
/// `IORING_OP_URING_CMD` / `SOCKET_URING_OP_SETSOCKOPT` (6.7). Chained (see above).
///
/// The kernel reads `value` when the step *runs*, which for a linked step is after submission:
/// hence `&'static`.
pub fn set_int_option(
    slot: u32,
    gen: u32,
    level: i32,
    name: i32,
    value: &'static libc::c_int,
) -> Sqe {
    let e = opcode::SetSockOpt::new(
        types::Fixed(slot),
        level as u32,
        name as u32,
        (value as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as u32,
    )
    .build();
    chained(tag(e, Op::SockOpt, slot, gen))
}

/// `bind(addr)` on fixed `slot` (6.11), used with port 0 and `IP_BIND_ADDRESS_NO_PORT` to pick the
/// source address while leaving the port to `connect`. Chained (see above).
///
/// # Safety
/// `addr` stays valid until the entry is submitted (the kernel copies it while preparing the entry;
/// the load generator keeps its source addresses in a table that outlives its ring).
pub unsafe fn bind(slot: u32, gen: u32, addr: *const libc::sockaddr_in) -> Sqe {
    let e = opcode::Bind::new(
        types::Fixed(slot),
        addr.cast(),
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    )
    .build();
    chained(tag(e, Op::Bind, slot, gen))
}

/// `connect(addr)` on fixed `slot` (5.5; fixed files 5.15), the last step of the set-up chain:
/// always posts one completion — 0, the connect error, or `ECANCELED` when an earlier step failed.
///
/// # Safety
/// `addr` stays valid until the entry is submitted (the kernel copies it while preparing the entry;
/// the load generator keeps the destination in a setup that outlives its ring).
pub unsafe fn connect(slot: u32, gen: u32, addr: *const libc::sockaddr_in) -> Sqe {
    let e = opcode::Connect::new(
        types::Fixed(slot),
        addr.cast(),
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    )
    .build();
    tag(e, Op::Connect, slot, gen)
}
