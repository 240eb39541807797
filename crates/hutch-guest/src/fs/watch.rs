//! Directory watching with inotify: the `WatchDir` server stream and the
//! polling trio `CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher` that
//! the synchronous Python SDK uses.
//!
//! 1. Opening (as the request's user, on the blocking pool): the path must be
//!    a directory (`not_found` / `invalid_argument`), not on a network mount
//!    unless allowed; one inotify instance watches it and, when recursive,
//!    every directory below it (bounded by [`MAX_WATCHED_DIRS`]).
//! 2. A task per watcher turns inotify events into envd events, as envd's
//!    fsnotify mapping does: create/moved-to → CREATE, modify → WRITE,
//!    delete → REMOVE, moved-from → RENAME, attrib → CHMOD. Names are
//!    relative to the watched directory (`sub/file.txt`).
//! 3. Recursive watches follow the tree: a directory created or moved in is
//!    watched at once, and what it already holds by then (e.g. after
//!    `mkdir -p a/b && touch a/b/f`) is reported as CREATE events, so nothing
//!    created in the gap is missed (an entry may then be reported twice).
//!    A directory moved out stops being watched.
//! 4. `WatchDir` sends `start{}`, then events, and `keepalive{}` whenever
//!    the client's interval passes without an event; it ends when the client
//!    goes away or the watched directory is removed.
//! 5. A polling watcher queues at most [`MAX_QUEUED_EVENTS`]; past that the
//!    *oldest* events are dropped (and counted in the log): a client that
//!    polls late still sees what happened most recently, and the guest's
//!    memory stays bounded. One not polled for [`POLL_IDLE_EXPIRY`] is
//!    removed, so abandoned watchers do not hold inotify instances forever.
//! 6. At most [`MAX_WATCHERS`] watchers (both kinds) exist at once; more is
//!    `resource_exhausted`.

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{extract::State, response::Response};
use futures::StreamExt;
use hutch_envd::{
    connect::{Code, ConnectError},
    filesystem::{
        CreateWatcherRequest, CreateWatcherResponse, EventType, FilesystemEvent,
        GetWatcherEventsRequest, GetWatcherEventsResponse, RemoveWatcherRequest,
        RemoveWatcherResponse, WatchDirRequest, WatchDirResponse,
        watch_dir_response::{Event as WatchEvent, KeepAlive, StartEvent},
    },
};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

use super::{
    FsError,
    entry::{Names, entry_info},
    handlers::resolve_for,
    identity::{blocking_as, with_user},
};
use crate::{
    Config, GuestState,
    auth::RequestUser,
    rpc::{
        RpcError, StreamRequest, StreamSender, Unary, UnaryReply, server_stream, stream_response,
    },
    users::User,
};

/// Watchers (streaming and polling) that may exist at once.
pub const MAX_WATCHERS: usize = 64;
/// Directories one recursive watcher watches at most.
pub const MAX_WATCHED_DIRS: usize = 8192;
/// Events a polling watcher holds between two polls; older ones are dropped.
pub const MAX_QUEUED_EVENTS: usize = 4096;
/// A polling watcher not polled for this long is removed.
pub const POLL_IDLE_EXPIRY: Duration = Duration::from_secs(600);
/// Entries reported as CREATE when a new directory appears in a recursive watch.
const MAX_SYNTHETIC_EVENTS: usize = 1024;

const NFS_SUPER_MAGIC: i64 = 0x6969;
const CIFS_MAGIC: i64 = 0xFF53_4D42;
const SMB_SUPER_MAGIC: i64 = 0x517B;
const SMB2_MAGIC: i64 = 0xFE53_4D42;
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

fn watch_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::ONLYDIR
}

/// All watchers of the guest.
pub struct Watchers {
    #[allow(dead_code)]
    config: Arc<Config>,
    active: Arc<AtomicUsize>,
    polling: Mutex<HashMap<String, Polling>>,
}

/// One watcher's place in the [`MAX_WATCHERS`] budget, released on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Polling {
    _slot: Slot,
    uid: u32,
    queue: Arc<Mutex<Queue>>,
    task: tokio::task::JoinHandle<()>,
    last_poll: Instant,
}

impl Drop for Polling {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct Queue {
    events: VecDeque<FilesystemEvent>,
    dropped: u64,
}

impl Watchers {
    pub fn new(config: Arc<Config>) -> Self {
        Watchers {
            config,
            active: Arc::new(AtomicUsize::new(0)),
            polling: Mutex::new(HashMap::new()),
        }
    }

    fn acquire(&self) -> Result<Slot, FsError> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WATCHERS).then_some(n + 1)
            })
            .map_err(|_| {
                FsError::Exhausted(format!(
                    "too many directory watchers (at most {MAX_WATCHERS})"
                ))
            })?;
        Ok(Slot(self.active.clone()))
    }

    fn polling(&self) -> std::sync::MutexGuard<'_, HashMap<String, Polling>> {
        self.polling.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes polling watchers nobody polled for [`POLL_IDLE_EXPIRY`].
    fn sweep(&self) {
        self.polling()
            .retain(|_, p| p.last_poll.elapsed() < POLL_IDLE_EXPIRY);
    }

    /// Number of watchers alive (for tests and diagnostics).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// Where a watcher's events go.
enum Sink {
    Stream(StreamSender<WatchDirResponse>),
    Queue(Arc<Mutex<Queue>>),
}

impl Sink {
    async fn emit(&self, ev: FilesystemEvent) -> Result<(), ()> {
        match self {
            Sink::Stream(tx) => tx
                .send(&WatchDirResponse {
                    event: Some(WatchEvent::Filesystem(ev)),
                })
                .await
                .map_err(|_| ()),
            Sink::Queue(q) => {
                let mut q = q.lock().unwrap_or_else(|p| p.into_inner());
                if q.events.len() >= MAX_QUEUED_EVENTS {
                    q.events.pop_front();
                    q.dropped += 1;
                    if q.dropped.is_power_of_two() {
                        tracing::warn!(
                            dropped = q.dropped,
                            "polling watcher not drained: dropping its oldest events"
                        );
                    }
                }
                q.events.push_back(ev);
                Ok(())
            }
        }
    }

    async fn keepalive(&self) -> Result<(), ()> {
        match self {
            Sink::Stream(tx) => tx
                .send(&WatchDirResponse {
                    event: Some(WatchEvent::Keepalive(KeepAlive {})),
                })
                .await
                .map_err(|_| ()),
            Sink::Queue(_) => Ok(()),
        }
    }

    async fn closed(&self) {
        match self {
            Sink::Stream(tx) => tx.closed().await,
            Sink::Queue(_) => std::future::pending().await,
        }
    }
}

/// Watches added by [`add_tree`], and the CREATE events it synthesised.
type Added = (Vec<(WatchDescriptor, PathBuf)>, Vec<FilesystemEvent>);

/// What a watcher watches: watch descriptor → directory relative to the root.
struct Tree {
    root: PathBuf,
    recursive: bool,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    root_wd: WatchDescriptor,
}

/// Adds a watch on `rel` (relative to `root`) and, for a recursive watch,
/// every directory below it; returns the new descriptors and, when `report`,
/// CREATE events for what the directories already hold (blocking, as the user).
fn add_tree(
    watches: &mut Watches,
    root: &Path,
    rel: &Path,
    recursive: bool,
    budget: usize,
    report: bool,
) -> Result<Added, FsError> {
    let mut added = Vec::new();
    let mut events = Vec::new();
    let mut queue = VecDeque::from([rel.to_path_buf()]);
    while let Some(dir_rel) = queue.pop_front() {
        if added.len() >= budget {
            return Err(FsError::Exhausted(format!(
                "{} holds more than {MAX_WATCHED_DIRS} directories to watch",
                root.display()
            )));
        }
        let abs = root.join(&dir_rel);
        let mask = if dir_rel.as_os_str().is_empty() {
            watch_mask()
        } else {
            watch_mask() | WatchMask::DONT_FOLLOW
        };
        match watches.add(&abs, mask) {
            Ok(wd) => added.push((wd, dir_rel.clone())),
            // The root must be watchable; a subdirectory that vanished or is
            // unreadable meanwhile is skipped.
            Err(e) if added.is_empty() => {
                return Err(match e.raw_os_error() {
                    Some(libc::ENOSPC | libc::EMFILE) => {
                        FsError::Exhausted("the sandbox's inotify watch limit is reached".into())
                    }
                    _ => FsError::io("watching", &abs, e),
                });
            }
            Err(_) => continue,
        }
        if !recursive {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&abs) else {
            continue;
        };
        for item in rd.flatten() {
            let child_rel = dir_rel.join(item.file_name());
            let is_dir = item.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if report && events.len() < MAX_SYNTHETIC_EVENTS {
                events.push(FilesystemEvent {
                    name: child_rel.to_string_lossy().into_owned(),
                    r#type: EventType::Create as i32,
                    entry: None,
                });
            }
            if is_dir {
                queue.push_back(child_rel);
            }
        }
    }
    Ok((added, events))
}

/// Step 1 of the module docs: checks the path and sets the watches up.
async fn open(
    state: &GuestState,
    user: &User,
    raw_path: &str,
    recursive: bool,
    allow_network_mounts: bool,
) -> Result<(Inotify, Tree), FsError> {
    let root = resolve_for(state, user, raw_path)?;
    blocking_as(user, move || {
        let meta = std::fs::metadata(&root).map_err(|e| FsError::io("stat", &root, e))?;
        if !meta.is_dir() {
            return Err(FsError::Invalid(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        // `f_type`'s width differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        if !allow_network_mounts
            && let Ok(st) = rustix::fs::statfs(&root)
            && matches!(
                st.f_type as i64,
                NFS_SUPER_MAGIC | CIFS_MAGIC | SMB_SUPER_MAGIC | SMB2_MAGIC | FUSE_SUPER_MAGIC
            )
        {
            return Err(FsError::Invalid(format!(
                "{} is on a network filesystem; set allow_network_mounts to watch it",
                root.display()
            )));
        }
        let inotify = Inotify::init().map_err(|e| match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => {
                FsError::Exhausted("the sandbox's inotify instance limit is reached".into())
            }
            _ => FsError::io("watching", &root, e),
        })?;
        let mut watches = inotify.watches();
        let (added, _) = add_tree(
            &mut watches,
            &root,
            Path::new(""),
            recursive,
            MAX_WATCHED_DIRS,
            false,
        )?;
        let root_wd = added
            .first()
            .map(|(wd, _)| wd.clone())
            .ok_or_else(|| FsError::Internal("no watch".into()))?;
        Ok((
            inotify,
            Tree {
                root,
                recursive,
                dirs: added.into_iter().collect(),
                root_wd,
            },
        ))
    })
    .await
}

fn event_types(mask: EventMask) -> Vec<EventType> {
    let mut ops = Vec::with_capacity(2);
    if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        ops.push(EventType::Create);
    }
    if mask.contains(EventMask::MOVED_FROM) {
        ops.push(EventType::Rename);
    }
    if mask.contains(EventMask::ATTRIB) {
        ops.push(EventType::Chmod);
    }
    if mask.contains(EventMask::MODIFY) {
        ops.push(EventType::Write);
    }
    if mask.contains(EventMask::DELETE) {
        ops.push(EventType::Remove);
    }
    ops
}

/// Options a running watcher needs.
struct Run {
    user: User,
    include_entry: bool,
    etc_root: PathBuf,
    keepalive: Option<Duration>,
    /// A streaming watcher's budget slot lives as long as its task. A
    /// polling watcher's lives in its [`Polling`] entry instead, so that
    /// RemoveWatcher frees it at once, not when the aborted task is dropped.
    _slot: Option<Slot>,
}

async fn tick(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Step 2–4 of the module docs: the watcher's task.
async fn run(inotify: Inotify, mut tree: Tree, sink: Sink, opts: Run) {
    let mut watches = inotify.watches();
    let mut stream = match inotify.into_event_stream(vec![0u8; 16 << 10]) {
        Ok(s) => s,
        Err(e) => {
            if let Sink::Stream(tx) = sink {
                tx.fail(ConnectError::internal(format!(
                    "reading watch events failed: {e}"
                )))
                .await;
            }
            return;
        }
    };
    let mut keepalive = opts
        .keepalive
        .map(|d| tokio::time::interval_at(tokio::time::Instant::now() + d, d));
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = tick(&mut keepalive) => {
                if sink.keepalive().await.is_err() {
                    return;
                }
                continue;
            }
            _ = sink.closed() => return,
        };
        let ev = match ev {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                if let Sink::Stream(tx) = sink {
                    tx.fail(ConnectError::internal(format!(
                        "reading watch events failed: {e}"
                    )))
                    .await;
                }
                return;
            }
            None => return,
        };
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!(root = %tree.root.display(), "inotify queue overflowed: some events were lost");
            continue;
        }
        if ev.mask.contains(EventMask::IGNORED) {
            tree.dirs.remove(&ev.wd);
            if ev.wd == tree.root_wd {
                // The watched directory itself is gone: the watch is over.
                return;
            }
            continue;
        }
        let (Some(dir), Some(name)) = (tree.dirs.get(&ev.wd).cloned(), ev.name) else {
            continue;
        };
        let rel = dir.join(&name);
        let is_dir = ev.mask.contains(EventMask::ISDIR);
        let mut extra = Vec::new();
        if tree.recursive && is_dir && ev.mask.contains(EventMask::MOVED_FROM) {
            forget_subtree(&mut tree, &mut watches, &rel);
        }
        if tree.recursive && is_dir && ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            extra = watch_new_dir(&mut tree, &watches, &opts.user, &rel).await;
        }
        for op in event_types(ev.mask) {
            let entry =
                if opts.include_entry && !matches!(op, EventType::Remove | EventType::Rename) {
                    describe_event(&opts, tree.root.join(&rel)).await
                } else {
                    None
                };
            let fe = FilesystemEvent {
                name: lossy(&rel),
                r#type: op as i32,
                entry,
            };
            if sink.emit(fe).await.is_err() {
                return;
            }
        }
        for mut fe in extra {
            if opts.include_entry {
                fe.entry = describe_event(&opts, tree.root.join(&fe.name)).await;
            }
            if sink.emit(fe).await.is_err() {
                return;
            }
        }
        if let Some(k) = keepalive.as_mut() {
            k.reset();
        }
    }
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

async fn describe_event(opts: &Run, path: PathBuf) -> Option<hutch_envd::filesystem::EntryInfo> {
    let etc = opts.etc_root.clone();
    blocking_as(&opts.user, move || entry_info(&path, &mut Names::new(&etc)))
        .await
        .ok()
}

/// A directory left the tree: stop watching it and what is below it.
fn forget_subtree(tree: &mut Tree, watches: &mut Watches, rel: &Path) {
    let gone: Vec<WatchDescriptor> = tree
        .dirs
        .iter()
        .filter(|(_, d)| d.starts_with(rel))
        .map(|(wd, _)| wd.clone())
        .collect();
    for wd in gone {
        tree.dirs.remove(&wd);
        let _ = watches.remove(wd);
    }
}

/// A directory entered the tree: watch it (and below), report its contents.
async fn watch_new_dir(
    tree: &mut Tree,
    watches: &Watches,
    user: &User,
    rel: &Path,
) -> Vec<FilesystemEvent> {
    let budget = MAX_WATCHED_DIRS.saturating_sub(tree.dirs.len());
    let (root, rel2, mut w, user2) = (
        tree.root.clone(),
        rel.to_path_buf(),
        watches.clone(),
        user.clone(),
    );
    let added = tokio::task::spawn_blocking(move || {
        with_user(&user2, || {
            add_tree(&mut w, &root, &rel2, true, budget, true)
        })
    })
    .await;
    match added {
        Ok(Ok((added, events))) => {
            tree.dirs.extend(added);
            events
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "watching a new directory failed");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

pub async fn watch_dir(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    req: StreamRequest<WatchDirRequest>,
) -> Response {
    let codec = req.codec;
    let started = async {
        let slot = state.watchers.acquire()?;
        let (inotify, tree) = open(
            &state,
            &user,
            &req.msg.path,
            req.msg.recursive,
            req.msg.allow_network_mounts,
        )
        .await?;
        Ok::<_, FsError>((slot, inotify, tree))
    }
    .await;
    let (slot, inotify, tree) = match started {
        Ok(s) => s,
        Err(e) => return stream_response(Err((codec, e.into()))),
    };
    let (tx, reply) = server_stream::<WatchDirResponse>(codec);
    let opts = Run {
        user,
        include_entry: req.msg.include_entry,
        etc_root: state.config.etc_root.clone(),
        keepalive: Some(req.keepalive),
        _slot: Some(slot),
    };
    tokio::spawn(async move {
        if tx
            .send(&WatchDirResponse {
                event: Some(WatchEvent::Start(StartEvent {})),
            })
            .await
            .is_err()
        {
            return;
        }
        run(inotify, tree, Sink::Stream(tx), opts).await;
    });
    stream_response(Ok(reply))
}

fn new_watcher_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn create_watcher(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    req: Unary<CreateWatcherRequest>,
) -> Result<UnaryReply<CreateWatcherResponse>, RpcError> {
    state.watchers.sweep();
    let slot = state.watchers.acquire()?;
    let m = &req.msg;
    let (inotify, tree) = open(&state, &user, &m.path, m.recursive, m.allow_network_mounts).await?;
    let queue = Arc::new(Mutex::new(Queue::default()));
    let uid = user.uid;
    let opts = Run {
        user,
        include_entry: m.include_entry,
        etc_root: state.config.etc_root.clone(),
        keepalive: None,
        _slot: None,
    };
    let task = tokio::spawn(run(inotify, tree, Sink::Queue(queue.clone()), opts));
    let id = new_watcher_id();
    state.watchers.polling().insert(
        id.clone(),
        Polling {
            _slot: slot,
            uid,
            queue,
            task,
            last_poll: Instant::now(),
        },
    );
    Ok(UnaryReply {
        codec: req.codec,
        msg: CreateWatcherResponse { watcher_id: id },
    })
}

fn unknown_watcher(id: &str) -> RpcError {
    let shown: String = id.chars().take(64).collect();
    RpcError::new(Code::NotFound, format!("watcher {shown:?} not found"))
}

pub async fn get_watcher_events(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    req: Unary<GetWatcherEventsRequest>,
) -> Result<UnaryReply<GetWatcherEventsResponse>, RpcError> {
    state.watchers.sweep();
    let events = {
        let mut all = state.watchers.polling();
        let Some(w) = all
            .get_mut(&req.msg.watcher_id)
            .filter(|w| w.uid == user.uid)
        else {
            return Err(unknown_watcher(&req.msg.watcher_id));
        };
        w.last_poll = Instant::now();
        let mut q = w.queue.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut q.events).into()
    };
    Ok(UnaryReply {
        codec: req.codec,
        msg: GetWatcherEventsResponse { events },
    })
}

pub async fn remove_watcher(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    req: Unary<RemoveWatcherRequest>,
) -> Result<UnaryReply<RemoveWatcherResponse>, RpcError> {
    let removed = {
        let mut all = state.watchers.polling();
        match all.get(&req.msg.watcher_id) {
            Some(w) if w.uid == user.uid => all.remove(&req.msg.watcher_id),
            _ => None,
        }
    };
    // Dropping it aborts its task, which releases the inotify instance.
    drop(removed.ok_or_else(|| unknown_watcher(&req.msg.watcher_id))?);
    Ok(UnaryReply {
        codec: req.codec,
        msg: RemoveWatcherResponse {},
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn masks_map_like_fsnotify() {
        assert_eq!(event_types(EventMask::CREATE), vec![EventType::Create]);
        assert_eq!(
            event_types(EventMask::MOVED_TO | EventMask::ISDIR),
            vec![EventType::Create]
        );
        assert_eq!(event_types(EventMask::MOVED_FROM), vec![EventType::Rename]);
        assert_eq!(event_types(EventMask::MODIFY), vec![EventType::Write]);
        assert_eq!(event_types(EventMask::DELETE), vec![EventType::Remove]);
        assert_eq!(event_types(EventMask::ATTRIB), vec![EventType::Chmod]);
    }
}
