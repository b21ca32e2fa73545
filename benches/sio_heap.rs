//! Where an idle Socket.IO connection's memory goes, allocation by allocation.
//!
//! Starts chatd's server in this process (`chatd::server::serve`, SQLite in a temp dir, one
//! Tokio worker as `benches/run.sh` runs it) under a counting global allocator that wraps
//! mimalloc (chatd's allocator), opens `BENCH_CONNECTIONS` idle Socket.IO websocket
//! connections to it (each its own user, authenticating with a JWT in the namespace connect
//! packet and waiting for `ready`, as the load generator's idle scenario does), lets them
//! idle through a few ping rounds and then reports the server's heap:
//!
//! - the growth per connection of the server's live heap, as requested (`Layout::size`) and
//!   as mimalloc hands it out (`mi_usable_size`: the size class), over a baseline taken
//!   before the first connection;
//! - every allocation made by the server while the connections were opened that is still
//!   live at the end, grouped by its call stack (captured with `_Unwind_Backtrace` and
//!   symbolised with `addr2line`): bytes and allocations per connection, and the frames
//!   that name what was allocated (which struct, Vec, map, task or channel, in which crate).
//!
//! The clients run on a thread of their own whose allocations are counted apart, so they do
//! not pollute the server's figures. The server's Socket.IO ping interval is 5 s here (chatd's
//! default is 25 s) so that every connection has been pinged and has answered a few times
//! before the heap is read: the figures are an idle connection's steady state.
//!
//! `cargo bench --bench sio_heap`; env:
//! - `BENCH_CONNECTIONS` (default 2000): idle connections to open.
//! - `BENCH_SETTLE_SECS` (default 12): idle time before the heap is read.
//! - `BENCH_TOP` (default 40): call stacks printed, largest first.
//! - `BENCH_FRAMES` (default 12): frames printed per stack (after the allocator's own).

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use support::wire::{ENGINE_IO_PONG, Incoming, Proto, connect_client, decode, push_text, source_for};

/// The counting allocator: mimalloc underneath.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Return addresses kept per allocation's call stack.
const MAX_FRAMES: usize = 64;

unsafe extern "C" {
    /// mimalloc's size class for a block it handed out.
    fn mi_usable_size(p: *const std::ffi::c_void) -> usize;
    /// The platform unwinder (libgcc_s, already linked by std).
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut std::ffi::c_void, *mut std::ffi::c_void) -> i32,
        arg: *mut std::ffi::c_void,
    ) -> i32;
    fn _Unwind_GetIP(context: *mut std::ffi::c_void) -> usize;
}

thread_local! {
    /// Allocations on this thread are the clients' (or the harness's), not the server's.
    static CLIENT_THREAD: Cell<bool> = const { Cell::new(false) };
    /// This thread is inside the tracker: its own allocations are not tracked.
    static IN_TRACKER: Cell<bool> = const { Cell::new(false) };
}

/// Live heap of one side (server or clients): bytes requested, bytes handed out, blocks.
struct Side {
    requested: AtomicI64,
    usable: AtomicI64,
    blocks: AtomicI64,
}

impl Side {
    const fn new() -> Side {
        Side { requested: AtomicI64::new(0), usable: AtomicI64::new(0), blocks: AtomicI64::new(0) }
    }

    fn add(&self, requested: usize, usable: usize, blocks: i64) {
        self.requested.fetch_add(requested as i64 * blocks.signum(), Ordering::Relaxed);
        self.usable.fetch_add(usable as i64 * blocks.signum(), Ordering::Relaxed);
        self.blocks.fetch_add(blocks, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Heap {
        Heap {
            requested: self.requested.load(Ordering::Relaxed),
            usable: self.usable.load(Ordering::Relaxed),
            blocks: self.blocks.load(Ordering::Relaxed),
        }
    }
}

/// A [`Side`]'s figures at one moment.
#[derive(Clone, Copy, Debug)]
struct Heap {
    requested: i64,
    usable: i64,
    blocks: i64,
}

/// The server's live heap (every thread but the clients' and the harness's).
static SERVER: Side = Side::new();
/// The clients' (and the harness's) live heap.
static CLIENTS: Side = Side::new();
/// The tracker's own tables (kept out of the server's figures).
static OVERHEAD: Side = Side::new();
/// Whether server allocations are being recorded with their call stacks.
static TRACKING: AtomicBool = AtomicBool::new(false);
/// Stacks captured (for the progress line).
static CAPTURED: AtomicUsize = AtomicUsize::new(0);
/// The live tracked allocations; `None` when not tracking.
static TRACKER: Mutex<Option<Tracker>> = Mutex::new(None);

/// The server's allocations made while tracking and not freed since, by address: bytes
/// requested, bytes handed out (mimalloc's size class) and call stack.
#[derive(Default)]
struct Tracker {
    live: HashMap<usize, Block>,
    stack_ids: HashMap<Vec<usize>, u32>,
    stacks: Vec<Vec<usize>>,
}

/// One live block of the server's.
#[derive(Clone, Copy)]
struct Block {
    requested: usize,
    usable: usize,
    stack: u32,
}

/// Sums of blocks.
#[derive(Clone, Copy, Default)]
struct Sum {
    requested: usize,
    usable: usize,
    blocks: usize,
}

impl Sum {
    fn add(&mut self, other: Sum) {
        self.requested += other.requested;
        self.usable += other.usable;
        self.blocks += other.blocks;
    }

    /// Per connection: `requested B  usable B  blocks`.
    fn per(&self, n: f64) -> String {
        format!(
            "{:>8.1} B {:>8.1} B {:>6.2} blk",
            self.requested as f64 / n,
            self.usable as f64 / n,
            self.blocks as f64 / n
        )
    }
}

/// A call stack being captured.
struct Frames {
    ips: [usize; MAX_FRAMES],
    len: usize,
}

/// The unwinder's callback: records one frame's address; stops when the buffer is full.
extern "C" fn push_frame(context: *mut std::ffi::c_void, arg: *mut std::ffi::c_void) -> i32 {
    // SAFETY: `arg` is the `Frames` that `capture` passed, alive for the whole walk.
    let frames = unsafe { &mut *(arg as *mut Frames) };
    // SAFETY: `context` is the unwinder's context for this frame.
    let ip = unsafe { _Unwind_GetIP(context) };
    if ip == 0 || frames.len == MAX_FRAMES {
        return 4; // _URC_NORMAL_STOP
    }
    frames.ips[frames.len] = ip;
    frames.len += 1;
    0 // _URC_NO_REASON: go on
}

/// The return addresses of the current call stack, innermost first.
fn capture() -> Frames {
    let mut frames = Frames { ips: [0; MAX_FRAMES], len: 0 };
    // SAFETY: the callback only writes into `frames`, which outlives the call.
    unsafe { _Unwind_Backtrace(push_frame, &mut frames as *mut Frames as *mut std::ffi::c_void) };
    frames
}

/// Runs `f` as the tracker: allocations inside it are neither tracked nor re-entered.
fn as_tracker(f: impl FnOnce()) {
    IN_TRACKER.with(|t| t.set(true));
    f();
    IN_TRACKER.with(|t| t.set(false));
}

/// The tracker, even if a panic poisoned its lock.
fn lock_tracker() -> std::sync::MutexGuard<'static, Option<Tracker>> {
    TRACKER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts every block on the side of the thread that allocates it and, while tracking,
/// records the server's blocks with their call stacks.
struct Counting;

impl Counting {
    fn allocated(&self, ptr: *mut u8, layout: Layout) {
        if ptr.is_null() {
            return;
        }
        // SAFETY: `ptr` was just returned by mimalloc.
        let usable = unsafe { mi_usable_size(ptr as *const std::ffi::c_void) };
        if CLIENT_THREAD.with(Cell::get) {
            CLIENTS.add(layout.size(), usable, 1);
            return;
        }
        if IN_TRACKER.with(Cell::get) {
            OVERHEAD.add(layout.size(), usable, 1);
            return;
        }
        SERVER.add(layout.size(), usable, 1);
        if TRACKING.load(Ordering::Relaxed) {
            as_tracker(|| {
                let frames = capture();
                let mut tracker = lock_tracker();
                if let Some(tracker) = tracker.as_mut() {
                    let stack = &frames.ips[..frames.len];
                    let id = match tracker.stack_ids.get(stack) {
                        Some(id) => *id,
                        None => {
                            let id = tracker.stacks.len() as u32;
                            tracker.stacks.push(stack.to_vec());
                            tracker.stack_ids.insert(stack.to_vec(), id);
                            id
                        }
                    };
                    let block = Block { requested: layout.size(), usable, stack: id };
                    tracker.live.insert(ptr as usize, block);
                    CAPTURED.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }

    fn freeing(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of mimalloc's.
        let usable = unsafe { mi_usable_size(ptr as *const std::ffi::c_void) };
        if CLIENT_THREAD.with(Cell::get) {
            CLIENTS.add(layout.size(), usable, -1);
            return;
        }
        if IN_TRACKER.with(Cell::get) {
            OVERHEAD.add(layout.size(), usable, -1);
            return;
        }
        SERVER.add(layout.size(), usable, -1);
        if TRACKING.load(Ordering::Relaxed) {
            as_tracker(|| {
                if let Some(tracker) = lock_tracker().as_mut() {
                    tracker.live.remove(&(ptr as usize));
                }
            });
        }
    }
}

// SAFETY: every call is passed on to mimalloc unchanged; the bookkeeping around it never
// touches the blocks.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { mimalloc::MiMalloc.alloc(layout) };
        self.allocated(ptr, layout);
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        self.allocated(ptr, layout);
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.freeing(ptr, layout);
        // SAFETY: the caller's contract, passed on.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.freeing(ptr, layout);
        // SAFETY: the caller's contract, passed on.
        let new = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        // SAFETY: `new_size` was checked by the caller as for `realloc`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if new.is_null() {
            // The old block is still there.
            self.allocated(ptr, layout);
        } else {
            self.allocated(new, new_layout);
        }
        new
    }
}

/// `name` from the environment, parsed, or `default` when unset.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    CLIENT_THREAD.with(|c| c.set(true));
    let n: usize = env_or("BENCH_CONNECTIONS", 2000)?;
    let settle = Duration::from_secs(env_or("BENCH_SETTLE_SECS", 12)?);
    let top: usize = env_or("BENCH_TOP", 40)?;
    let shown_frames: usize = env_or("BENCH_FRAMES", 12)?;

    let data_dir = tempfile::tempdir()?;
    let addr = start_server(data_dir.path().to_owned())?;
    // Let the server finish starting (SQLite, first allocations) before the baseline.
    std::thread::sleep(Duration::from_secs(2));
    let users: Vec<String> = (0..n).map(|i| format!("idle{i}")).collect();
    let tokens = support::tokens(&users)?;
    let baseline = SERVER.snapshot();
    *lock_tracker() = Some(Tracker::default());
    TRACKING.store(true, Ordering::SeqCst);
    let opened = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let clients = std::thread::spawn(move || run_clients(addr, tokens, stop_rx));
    // Wait until the clients say they are all connected (or gave up).
    let open = loop {
        std::thread::sleep(Duration::from_millis(200));
        if clients.is_finished() {
            anyhow::bail!("the client thread ended early: {:?}", clients.join());
        }
        let open = OPEN.load(Ordering::SeqCst);
        if open + FAILED.load(Ordering::SeqCst) >= n {
            break open;
        }
    };
    println!(
        "{open} idle Socket.IO connections open in {:.1} s ({} failed), {} stacks captured; idling {} s",
        opened.elapsed().as_secs_f64(),
        FAILED.load(Ordering::SeqCst),
        CAPTURED.load(Ordering::Relaxed),
        settle.as_secs()
    );
    std::thread::sleep(settle);
    TRACKING.store(false, Ordering::SeqCst);
    let after = SERVER.snapshot();
    let tracker = lock_tracker().take().context("tracker")?;
    let pings = PINGS.load(Ordering::SeqCst);

    let per = |a: i64, b: i64| (a - b) as f64 / open.max(1) as f64;
    println!(
        "server heap over its baseline, per connection: {:.0} B requested, {:.0} B in mimalloc size classes, {:.2} blocks (Engine.IO pings answered meanwhile: {pings})",
        per(after.requested, baseline.requested),
        per(after.usable, baseline.usable),
        per(after.blocks, baseline.blocks)
    );
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().to_owned()));
    println!(
        "process VmRSS (server and clients): {}; clients' live heap {:.1} MiB",
        rss.unwrap_or_default(),
        CLIENTS.snapshot().usable as f64 / 1048576.0
    );
    report(&tracker, open, top, shown_frames)?;
    let _ = stop_tx.send(true);
    // The server thread keeps running (and its database open): the process ends here.
    let _ = std::fs::remove_dir_all(data_dir.path());
    std::process::exit(0)
}

/// Client connections open (they saw `ready`).
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// Client connections that failed to open.
static FAILED: AtomicUsize = AtomicUsize::new(0);
/// Engine.IO pings the clients answered.
static PINGS: AtomicUsize = AtomicUsize::new(0);

/// Starts chatd on a thread of its own (one Tokio worker, as `benches/run.sh` runs it) and
/// returns where it listens.
fn start_server(data_dir: std::path::PathBuf) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let run = || -> anyhow::Result<()> {
            let mut config = chatd::config::Config::with_data_dir(&data_dir)?;
            config.jwt.secret = Some(support::SECRET.to_owned());
            config.limits.messages_per_second = 0;
            config.connections.handshake_rate = 0;
            config.ws.ping_interval = Duration::from_secs(5);
            config.ws.idle_timeout = Duration::from_secs(20);
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            runtime.block_on(async move {
                let state = chatd::state::AppState::build(config).await?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                tx.send(listener.local_addr()?)?;
                chatd::server::serve(listener, state, std::future::pending()).await?;
                anyhow::Ok(())
            })
        };
        if let Err(err) = run() {
            eprintln!("server: {err:#}");
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).context("the server did not start")
}

/// Opens one idle Socket.IO connection per token (100 handshakes at a time) and keeps each
/// answering pings until `stop`.
fn run_clients(addr: SocketAddr, tokens: Vec<String>, stop: tokio::sync::watch::Receiver<bool>) {
    CLIENT_THREAD.with(|c| c.set(true));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
    runtime.block_on(async move {
        let mut idlers = tokio::task::JoinSet::new();
        let mut opening = futures::stream::iter(tokens.into_iter().enumerate())
            .map(|(i, token)| async move {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    connect_client(addr, Proto::SocketIo, Some(source_for(i)), &token),
                )
                .await
            })
            .buffer_unordered(100);
        while let Some(result) = opening.next().await {
            let Ok(Ok(mut conn)) = result else {
                FAILED.fetch_add(1, Ordering::SeqCst);
                continue;
            };
            OPEN.fetch_add(1, Ordering::SeqCst);
            let mut stop = stop.clone();
            idlers.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        message = conn.recv() => {
                            let Ok(message) = message else { return };
                            if decode(Proto::SocketIo, &message) == Incoming::Ping {
                                PINGS.fetch_add(1, Ordering::Relaxed);
                                push_text(conn.out(), ENGINE_IO_PONG);
                                if conn.send_all().await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
        }
        while idlers.join_next().await.is_some() {}
    });
}

/// One symbolised frame: function (demangled, without its hash; inlined functions have
/// their bare name, the function the code was compiled into has its full path) and the
/// source line (`crate-version/src/file.rs:line`, `std:…`, or chatd's own `src/…`).
#[derive(Clone)]
struct Frame {
    function: String,
    location: String,
}

/// Frames that only say *how* memory was allocated, not what for: this allocator, the
/// standard library's collections and boxes, hash tables.
fn is_plumbing(frame: &Frame) -> bool {
    const PLACES: &[&str] = &["benches/sio_heap.rs", "std:", "hashbrown-", "??"];
    const PREFIXES: &[&str] = &[
        "sio_heap::",
        "<sio_heap::",
        "__rust",
        "__rdl",
        "__rg",
        "alloc::",
        "<alloc::",
        "core::",
        "<core::",
        "std::",
        "<std::",
        "hashbrown::",
        "<hashbrown::",
        "mimalloc",
        "<mimalloc",
        "_Unwind",
        "bytes::bytes_mut::BytesMut::reserve",
        "bytes::bytes_mut::BytesMut::with_capacity",
        "<bytes::",
    ];
    PLACES.iter().any(|p| frame.location.starts_with(p))
        || PREFIXES.iter().any(|p| frame.function.starts_with(p))
        || frame.function == "??"
}

/// Symbolises return addresses of this executable with `addr2line` (inlined frames
/// included, innermost first).
fn symbolise(ips: &[usize]) -> anyhow::Result<HashMap<usize, Vec<Frame>>> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    // The executable's load address: its mapping at file offset 0 (a PIE's first segment has
    // virtual address 0).
    let base = maps
        .lines()
        .filter(|l| l.ends_with(exe.to_string_lossy().as_ref()))
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let range = fields.next()?;
            let offset = fields.nth(1)?;
            (usize::from_str_radix(offset, 16).ok()? == 0)
                .then(|| usize::from_str_radix(range.split('-').next()?, 16).ok())
                .flatten()
        })
        .context("the executable's mapping")?;
    let mut input = String::new();
    for ip in ips {
        // The return address minus one lies in the call instruction.
        input.push_str(&format!("{:#x}\n", ip.wrapping_sub(base).wrapping_sub(1)));
    }
    let path = std::env::temp_dir().join(format!("sio_heap_{}.txt", std::process::id()));
    std::fs::write(&path, input)?;
    let output = Command::new("addr2line")
        .args(["-f", "-C", "-i", "-a", "-e"])
        .arg(&exe)
        .stdin(std::fs::File::open(&path)?)
        .output()
        .context("running addr2line (binutils)")?;
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&output.stdout);
    let mut frames: HashMap<usize, Vec<Frame>> = HashMap::new();
    let mut lines = text.lines().peekable();
    let mut index = 0usize;
    while let Some(line) = lines.next() {
        if !line.starts_with("0x") {
            continue;
        }
        let mut names = Vec::new();
        let mut locations = Vec::new();
        while let Some(next) = lines.peek() {
            if next.starts_with("0x") {
                break;
            }
            names.push(strip_hash(lines.next().unwrap_or_default()));
            locations.push(short_path(lines.next().unwrap_or_default()));
        }
        // With line tables only, addr2line names the innermost of several inlined frames
        // after the function they were compiled into (which is also the last frame).
        if names.len() > 1 {
            names[0] = "…".to_owned();
        }
        let list = names
            .into_iter()
            .zip(locations)
            .map(|(function, location)| Frame { function, location })
            .collect();
        if let Some(ip) = ips.get(index) {
            frames.insert(*ip, list);
        }
        index += 1;
    }
    Ok(frames)
}

/// `foo::bar::h0123456789abcdef` → `foo::bar`.
fn strip_hash(function: &str) -> String {
    match function.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head.to_owned()
        }
        _ => function.to_owned(),
    }
}

/// A source path shortened to the crate: `…/registry/src/…/engineioxide-0.17.9/src/x.rs:12`
/// → `engineioxide-0.17.9/src/x.rs:12`.
fn short_path(location: &str) -> String {
    let location = location.split(" (discriminator").next().unwrap_or(location);
    if let Some(at) = location.find("/registry/src/") {
        let rest = &location[at + "/registry/src/".len()..];
        return rest.split_once('/').map_or(rest, |(_, r)| r).to_owned();
    }
    if let Some(at) = location.find("/library/") {
        return format!("std:{}", &location[at + "/library/".len()..]);
    }
    location.rsplit_once("/wt-bench/").map_or(location, |(_, r)| r).to_owned()
}

/// `f<A<B>, C>::g<D>` → `f::g`: function names without their generic arguments.
fn short_name(function: &str) -> String {
    let mut out = String::with_capacity(function.len());
    let mut depth = 0usize;
    for c in function.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Crates that hold connections (rather than provide containers, tasks and channels): the
/// first of their frames on a stack says whose the allocation is.
const OWNERS: &[&str] = &[
    "chatd",
    "socketioxide",
    "socketioxide-core",
    "engineioxide",
    "engineioxide-core",
    "tungstenite",
    "tokio-tungstenite",
    "hyper",
    "hyper-util",
    "axum",
];

/// The crate a frame belongs to: from its source path, else from its function path.
fn crate_of(frame: &Frame) -> String {
    if let Some((head, _)) = frame.location.split_once("/src/")
        && let Some((name, version)) = head.rsplit_once('-')
        && version.starts_with(|c: char| c.is_ascii_digit())
    {
        return name.to_owned();
    }
    if frame.location.starts_with("src/") {
        return "chatd".to_owned();
    }
    let name = frame.function.trim_start_matches('<').trim_start_matches("&");
    let name = name.trim_start_matches("dyn ");
    name.split("::").next().unwrap_or("?").split(' ').next().unwrap_or("?").to_owned()
}

/// Prints the live tracked allocations grouped by crate, by call site and by call stack.
fn report(tracker: &Tracker, connections: usize, top: usize, shown_frames: usize) -> anyhow::Result<()> {
    let n = connections.max(1) as f64;
    let mut by_stack: HashMap<u32, Sum> = HashMap::new();
    for block in tracker.live.values() {
        by_stack.entry(block.stack).or_default().add(Sum {
            requested: block.requested,
            usable: block.usable,
            blocks: 1,
        });
    }
    let mut ips: Vec<usize> =
        by_stack.keys().flat_map(|id| tracker.stacks[*id as usize].iter().copied()).collect();
    ips.sort_unstable();
    ips.dedup();
    let symbols = symbolise(&ips)?;
    let expand = |id: u32| -> Vec<Frame> {
        tracker.stacks[id as usize]
            .iter()
            .flat_map(|ip| {
                symbols
                    .get(ip)
                    .cloned()
                    .unwrap_or_else(|| vec![Frame { function: format!("{ip:#x}"), location: String::new() }])
            })
            .filter(|f| !is_plumbing(f))
            .collect()
    };
    let mut total = Sum::default();
    for sum in by_stack.values() {
        total.add(*sum);
    }
    println!(
        "\nlive allocations the server made while the connections opened and idled, per connection ({} distinct stacks):\n   requested    usable  blocks\n{}",
        by_stack.len(),
        total.per(n)
    );

    // By call site class: the first frame that is not allocation plumbing, and whose it is.
    let mut by_site: BTreeMap<String, Sum> = BTreeMap::new();
    let mut by_crate: BTreeMap<String, Sum> = BTreeMap::new();
    for (id, sum) in &by_stack {
        let frames = expand(*id);
        let what = frames
            .first()
            .map_or("?".to_owned(), |f| format!("{} ({})", short_name(&f.function), f.location));
        let what_crate = frames.first().map(crate_of).unwrap_or_default();
        let owner = frames
            .iter()
            .find(|f| {
                let krate = crate_of(f);
                krate != what_crate && OWNERS.contains(&krate.as_str())
            })
            .map(|f| format!(" ← {} ({})", short_name(&f.function), f.location))
            .unwrap_or_default();
        by_site.entry(format!("{what}{owner}")).or_default().add(*sum);
        by_crate.entry(what_crate).or_default().add(*sum);
    }
    println!("\nby crate of the allocating frame, per connection:\n   requested    usable  blocks");
    let mut crates: Vec<_> = by_crate.into_iter().collect();
    crates.sort_by_key(|c| std::cmp::Reverse(c.1.requested));
    for (krate, sum) in crates {
        println!("{}  {krate}", sum.per(n));
    }
    println!(
        "\nby allocating frame, and the first frame of a crate that holds connections, per connection:\n   requested    usable  blocks"
    );
    let mut sites: Vec<_> = by_site.into_iter().collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.1.requested));
    for (site, sum) in sites.iter().take(top) {
        println!("{}  {site}", sum.per(n));
    }

    println!("\nby call stack, largest first, per connection (and bytes per block):");
    let mut stacks: Vec<_> = by_stack.into_iter().collect();
    stacks.sort_by_key(|s| std::cmp::Reverse(s.1.requested));
    for (id, sum) in stacks.into_iter().take(top) {
        println!("\n{}  {:>7.0} B each", sum.per(n), sum.requested as f64 / sum.blocks.max(1) as f64);
        for frame in expand(id).iter().take(shown_frames) {
            println!("      {}  {}", short_name(&frame.function), frame.location);
        }
    }
    Ok(())
}
