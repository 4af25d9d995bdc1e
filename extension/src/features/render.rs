//! Rendered files (`LOCKBOX_RENDER=SRC:DEST[,SRC:DEST...]`): for programs that read their
//! secrets from a config file. Each template `SRC` is read once; its references are
//! resolved through the cache (all templates' references in one round) and the result is
//! written to `DEST`, which must lie under `/tmp` (`LOCKBOX_RENDER_ROOT`).
//!
//! A file is written with mode 0600 to a temporary file in the same directory, synced and
//! renamed over `DEST`, so a reader sees the old file or the new one, never half of one.
//! Every directory below the root is opened relative to its parent without following
//! symbolic links (and created, mode 0700, only once its parent is known to be under the
//! root), so a link planted in the path cannot send a secret elsewhere.
//! A template whose references cannot all be resolved is reported and not written.
//!
//! File I/O runs on tokio's blocking pool, never on the runtime thread that serves
//! requests: a template on a slow filesystem (or a FIFO nobody writes) delays rendering,
//! not the API.
//!
//! The lifecycle renders during Init, after prefetch, and again on each INVOKE after
//! refresh: only files whose rendered content changed (compared by a keyed hash, so the
//! values themselves are not kept) are written again.

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::fs;
use std::hash::BuildHasher;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::reference::resolve::{self, Fetch};
use super::reference::{self, Template};

/// Where rendered files may be written unless `LOCKBOX_RENDER_ROOT` says otherwise: the
/// only writable place in a Lambda environment.
pub const DEFAULT_RENDER_ROOT: &str = "/tmp";
/// Largest template read.
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// One file to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderTarget {
    /// The template (absolute path, typically in the deployment package).
    pub source: PathBuf,
    /// Where the rendered file goes (absolute, under the render root).
    pub dest: PathBuf,
}

/// Every file to render, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderPlan {
    /// The files.
    pub targets: Vec<RenderTarget>,
    /// The directory every destination lies under.
    pub root: PathBuf,
}

/// An entry of `LOCKBOX_RENDER` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry:?}: {reason}")]
pub struct RenderPlanError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RenderPlan {
    /// Parses comma-separated `SRC:DEST` entries (blank ones ignored). Both paths are
    /// absolute; `DEST` lies under `root`, without `.` or `..` parts, and is named once.
    pub fn parse(raw: &str, root: &Path) -> Result<Self, RenderPlanError> {
        let mut targets: Vec<RenderTarget> = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let error = |reason: String| RenderPlanError {
                entry: entry.to_owned(),
                reason,
            };
            let (source, dest) = entry
                .split_once(':')
                .map(|(s, d)| (s.trim(), d.trim()))
                .ok_or_else(|| error("expected SRC:DEST".into()))?;
            let (source, dest) = (PathBuf::from(source), PathBuf::from(dest));
            if !source.is_absolute() {
                return Err(error("the template SRC must be an absolute path".into()));
            }
            let plain = |p: &Path| {
                p.components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            };
            if !dest.is_absolute() || !plain(&dest) {
                return Err(error(
                    "DEST must be an absolute path without '.' or '..' parts".into(),
                ));
            }
            if !dest.starts_with(root) || dest == root {
                return Err(error(format!(
                    "DEST must be a file under {} (LOCKBOX_RENDER_ROOT)",
                    root.display()
                )));
            }
            if targets.iter().any(|t| t.dest == dest) {
                return Err(error("DEST is named by another entry too".into()));
            }
            targets.push(RenderTarget { source, dest });
        }
        Ok(Self {
            targets,
            root: root.to_owned(),
        })
    }

    /// Whether there is nothing to render.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// What a render round did.
#[derive(Debug, Default)]
pub struct RenderReport {
    /// Files written.
    pub written: usize,
    /// Files whose content had not changed.
    pub unchanged: usize,
    /// Files not written, each with the template, destination and reason (names, never
    /// values).
    pub failures: Vec<String>,
}

/// A template, loaded or being read, and what was last written from it.
#[derive(Debug)]
struct File {
    target: RenderTarget,
    template: Loading,
    /// Keyed hash of the content last written.
    written: Option<u64>,
}

/// A template being read on the blocking pool, then its outcome. A render that gives up
/// waiting leaves the read running; the next render waits for the same read.
#[derive(Debug)]
enum Loading {
    Reading(JoinHandle<Result<Template, TemplateError>>),
    Done(Result<Template, TemplateError>),
}

impl Loading {
    /// Waits for the read to be over, if it is not.
    async fn finish(&mut self) {
        if let Loading::Reading(read) = self {
            let outcome = read.await.unwrap_or(Err(TemplateError::TaskFailed));
            *self = Loading::Done(outcome);
        }
    }
}

/// Renders the plan's files, keeping what it needs to tell whether a file changed.
#[derive(Debug)]
pub struct Renderer {
    root: PathBuf,
    files: Vec<File>,
    hasher: RandomState,
    /// Whether template load failures were reported already (they are, once).
    reported_loads: bool,
}

impl Renderer {
    /// Starts reading and parsing every template on the blocking pool; the first
    /// [`Renderer::render`] waits for them. A template that cannot be read or parsed is
    /// reported by that render. Must be called within a tokio runtime.
    pub fn load(plan: &RenderPlan) -> Self {
        let files = plan
            .targets
            .iter()
            .map(|target| {
                let source = target.source.clone();
                File {
                    target: target.clone(),
                    template: Loading::Reading(tokio::task::spawn_blocking(move || {
                        load_template(&source)
                    })),
                    written: None,
                }
            })
            .collect();
        Self {
            root: plan.root.clone(),
            files,
            hasher: RandomState::new(),
            reported_loads: false,
        }
    }

    /// Whether there is nothing to render.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Resolves every template's references in one round and writes the files whose
    /// content changed.
    pub async fn render(&mut self, fetch: &dyn Fetch) -> RenderReport {
        let mut report = RenderReport::default();
        for file in &mut self.files {
            file.template.finish().await;
        }
        let references: Vec<_> = self
            .files
            .iter()
            .filter_map(|f| match &f.template {
                Loading::Done(Ok(template)) => Some(template),
                _ => None,
            })
            .flat_map(|t| t.references().map(|(_, r)| r))
            .collect();
        let resolved = resolve::resolve(fetch, references).await;
        let report_loads = !std::mem::replace(&mut self.reported_loads, true);
        for file in &mut self.files {
            let named = format!(
                "{} -> {}",
                file.target.source.display(),
                file.target.dest.display()
            );
            let template = match &file.template {
                Loading::Done(Ok(template)) => template,
                Loading::Done(Err(problem)) => {
                    if report_loads {
                        report.failures.push(format!("{named}: {problem}"));
                    }
                    continue;
                }
                Loading::Reading(_) => continue,
            };
            let content = template.substitute(|written, reference| {
                resolved
                    .value(reference)
                    .map_err(|err| format!("{written}: {err}"))
            });
            let content = match content {
                Ok(content) => content,
                Err(problem) => {
                    report.failures.push(format!("{named}: {problem}"));
                    continue;
                }
            };
            let hash = self.hasher.hash_one(content.as_bytes());
            if file.written == Some(hash) {
                report.unchanged += 1;
                continue;
            }
            let dest = file.target.dest.clone();
            let root = self.root.clone();
            let outcome =
                tokio::task::spawn_blocking(move || write_atomically(&root, &dest, content))
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("the writing task failed")));
            match outcome {
                Ok(()) => {
                    file.written = Some(hash);
                    report.written += 1;
                }
                Err(err) => report
                    .failures
                    .push(format!("{named}: could not write: {err}")),
            }
        }
        report
    }
}

/// Why a template could not be loaded (reported by the first render).
#[derive(Debug, thiserror::Error)]
enum TemplateError {
    /// The file could not be read.
    #[error("could not read the template: {0}")]
    Read(#[source] std::io::Error),
    /// The file is larger than [`MAX_TEMPLATE_BYTES`].
    #[error("the template is larger than {MAX_TEMPLATE_BYTES} bytes")]
    TooLarge,
    /// The file is not UTF-8 text.
    #[error("could not read the template as UTF-8 text: {0}")]
    NotText(#[source] std::io::Error),
    /// The blocking task reading it failed.
    #[error("the template could not be read: the reading task failed")]
    TaskFailed,
    /// A reference in it is malformed.
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
}

/// Reads and parses one template (blocking: called on the blocking pool). At most
/// [`MAX_TEMPLATE_BYTES`] are read, whatever the file claims its size is.
fn load_template(source: &Path) -> Result<Template, TemplateError> {
    let file = fs::File::open(source).map_err(TemplateError::Read)?;
    let mut bytes = Vec::new();
    file.take(MAX_TEMPLATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(TemplateError::Read)?;
    if bytes.len() as u64 > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLarge);
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        TemplateError::NotText(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })?;
    Ok(reference::parse(&text)?)
}

/// Distinguishes temporary files of concurrent writes from one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `content` to `dest` through a temporary file in the same directory: mode 0600,
/// synced, renamed over `dest`.
///
/// `dest` must lie under `root` as written (checked before anything is touched). From
/// `root` down, each directory is opened relative to its parent with `O_NOFOLLOW`, and
/// created (mode 0700) if missing only after its parent was opened that way; the temporary
/// file is created and renamed relative to the last one. A symbolic link anywhere below
/// `root` is refused, so what is written cannot land outside it, whatever is swapped in
/// meanwhile. `root` itself is the configured anchor and is opened as named.
pub fn write_atomically(
    root: &Path,
    dest: &Path,
    content: Zeroizing<String>,
) -> std::io::Result<()> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let below = dest.strip_prefix(root).map_err(|_| {
        invalid(format!(
            "DEST is not under the render root {}",
            root.display()
        ))
    })?;
    let mut parts = Vec::new();
    for component in below.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            _ => return Err(invalid("DEST must not have '.' or '..' parts".into())),
        }
    }
    let Some((name, dirs)) = parts.split_last() else {
        return Err(invalid("DEST names no file".into()));
    };
    let mut dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for part in dirs {
        dir = open_or_create_dir(&dir, part).map_err(|err| match err {
            Errno::LOOP | Errno::NOTDIR => invalid(format!(
                "{:?} under the render root is a symbolic link or not a directory",
                part
            )),
            other => other.into(),
        })?;
    }
    let temp = format!(
        ".{}.lockbox-{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let written = (|| -> std::io::Result<()> {
        let fd = rustix::fs::openat(
            &dir,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        // The umask can only take bits away; set the mode exactly.
        rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR)?;
        let mut file = fs::File::from(fd);
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        // rename(2) replaces a link at `name` rather than following it.
        rustix::fs::renameat(&dir, temp.as_str(), &dir, *name)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = rustix::fs::unlinkat(&dir, temp.as_str(), AtFlags::empty());
    }
    written?;
    // Make the rename itself durable; a failure here does not undo the write.
    let _ = rustix::fs::fsync(&dir);
    Ok(())
}

/// Opens the directory `name` in `parent` without following a link, creating it (mode
/// 0700) if it does not exist.
fn open_or_create_dir(parent: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Err(Errno::NOENT) => {
            match rustix::fs::mkdirat(parent, name, Mode::RWXU) {
                // Made by a concurrent write meanwhile: open it the same way.
                Ok(()) | Err(Errno::EXIST) => {}
                Err(err) => return Err(err),
            }
            rustix::fs::openat(parent, name, flags, Mode::empty())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::reference::resolve::tests::{sample, FakeFetch};
    use std::os::unix::fs::PermissionsExt as _;

    /// A fresh directory under the system's temporary directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "lockbox-render-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(fs::canonicalize(dir).unwrap())
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn writes_whole_files_with_mode_0600_and_no_leftovers() {
        let scratch = Scratch::new("write");
        let dest = scratch.0.join("deep/er/app.conf");
        write_atomically(&scratch.0, &dest, Zeroizing::new("one".into())).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "one");
        assert_eq!(mode(&dest), 0o600);
        assert_eq!(mode(dest.parent().unwrap()), 0o700);
        // Replacing keeps the mode even if the old file was made readable meanwhile.
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&scratch.0, &dest, Zeroizing::new("two".into())).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "two");
        assert_eq!(mode(&dest), 0o600);
        assert!(leftovers(dest.parent().unwrap()).is_empty());
    }

    #[test]
    fn refuses_a_directory_that_leads_outside_the_root() {
        let root = Scratch::new("root");
        let outside = Scratch::new("outside");
        std::os::unix::fs::symlink(&outside.0, root.0.join("escape")).unwrap();
        let err = write_atomically(
            &root.0,
            &root.0.join("escape/x.conf"),
            Zeroizing::new("v".into()),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(fs::read_dir(&outside.0).unwrap().next().is_none());
    }

    #[test]
    fn a_link_in_the_path_is_refused_before_anything_is_created() {
        let root = Scratch::new("root");
        let outside = Scratch::new("outside");
        std::os::unix::fs::symlink(&outside.0, root.0.join("escape")).unwrap();
        // Directories below the link would be made outside the root if the path were
        // created first and checked after.
        let err = write_atomically(
            &root.0,
            &root.0.join("escape/new/deeper/x.conf"),
            Zeroizing::new("v".into()),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("escape"), "{err}");
        assert!(fs::read_dir(&outside.0).unwrap().next().is_none());
        // A link to a directory inside the root is refused too: no step follows a link.
        fs::create_dir(root.0.join("real")).unwrap();
        std::os::unix::fs::symlink(root.0.join("real"), root.0.join("inside")).unwrap();
        let err = write_atomically(
            &root.0,
            &root.0.join("inside/x.conf"),
            Zeroizing::new("v".into()),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(fs::read_dir(root.0.join("real")).unwrap().next().is_none());
        // A destination outside the root is refused before anything is opened.
        let err = write_atomically(
            &root.0,
            &outside.0.join("x.conf"),
            Zeroizing::new("v".into()),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    }

    #[test]
    fn a_link_at_the_destination_is_replaced_not_followed() {
        let root = Scratch::new("root");
        let outside = Scratch::new("outside");
        let target = outside.0.join("target");
        fs::write(&target, "untouched").unwrap();
        let dest = root.0.join("app.conf");
        std::os::unix::fs::symlink(&target, &dest).unwrap();
        write_atomically(&root.0, &dest, Zeroizing::new("rendered".into())).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
        assert!(!fs::symlink_metadata(&dest).unwrap().is_symlink());
        assert_eq!(fs::read_to_string(&dest).unwrap(), "rendered");
    }

    /// Templates are read off the runtime thread: with a one-thread runtime, the thread
    /// goes on (here: it signals) while a template's read is still blocked, on a FIFO that
    /// no one has opened for writing yet.
    #[test]
    fn templates_are_read_off_the_runtime_thread() {
        let scratch = Scratch::new("fifo");
        let source = scratch.0.join("app.tmpl");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &source,
            rustix::fs::FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        let dest = scratch.0.join("out/app.conf");
        let plan = RenderPlan::parse(
            &format!("{}:{}", source.display(), dest.display()),
            &scratch.0,
        )
        .unwrap();
        // The writer opens the FIFO once the runtime thread has moved on past `load`, or
        // after 5 s in any case (so that a blocked thread fails the test, not hangs it).
        let (moved_on, signal) = std::sync::mpsc::channel::<()>();
        let writer = {
            let source = source.clone();
            std::thread::spawn(move || {
                let went_on = signal
                    .recv_timeout(std::time::Duration::from_secs(5))
                    .is_ok();
                fs::OpenOptions::new()
                    .write(true)
                    .open(&source)
                    .and_then(|mut fifo| fifo.write_all(b"static text\n"))
                    .unwrap();
                went_on
            })
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = runtime.block_on(async {
            let mut renderer = Renderer::load(&plan);
            moved_on.send(()).unwrap();
            renderer.render(&FakeFetch::default()).await
        });
        assert!(
            writer.join().unwrap(),
            "the runtime thread was blocked reading the template"
        );
        assert_eq!(
            (report.written, report.failures.len()),
            (1, 0),
            "{report:?}"
        );
        assert_eq!(fs::read_to_string(&dest).unwrap(), "static text\n");
    }

    fn plan(scratch: &Scratch, templates: &[(&str, &str)]) -> RenderPlan {
        let mut raw = Vec::new();
        for (name, text) in templates {
            let source = scratch.0.join(format!("{name}.tmpl"));
            if !text.is_empty() {
                fs::write(&source, text).unwrap();
            }
            raw.push(format!(
                "{}:{}",
                source.display(),
                scratch.0.join("out").join(name).display()
            ));
        }
        RenderPlan::parse(&raw.join(","), &scratch.0).unwrap()
    }

    #[tokio::test]
    async fn renders_once_rewrites_on_change_and_never_half_writes() {
        let scratch = Scratch::new("renderer");
        let plan = plan(
            &scratch,
            &[
                (
                    "app.yaml",
                    "host: {{resolve:ssm:/app/host}}\npassword: {{resolve:ssm-secure:/app/pw}}\n\
                     azure: {{resolve:secretsmanager:dev/azure:SecretString:ConnectionString}}\n\
                     other: {{ mustache }}\n",
                ),
                ("static.txt", "no references here\n"),
            ],
        );
        let out = scratch.0.join("out");
        let mut fetch = sample();
        let mut renderer = Renderer::load(&plan);
        let report = renderer.render(&fetch).await;
        assert_eq!(
            (report.written, report.failures.len()),
            (2, 0),
            "{report:?}"
        );
        let app = out.join("app.yaml");
        assert_eq!(
            fs::read_to_string(&app).unwrap(),
            "host: db.local\npassword: hunter2\nazure: Endpoint=sb://x\nother: {{ mustache }}\n"
        );
        assert_eq!(mode(&app), 0o600);
        // One round for both files: one read per group.
        assert_eq!(fetch.calls().len(), 3, "{:?}", fetch.calls());

        // Nothing changed: nothing written (an edit made meanwhile stays).
        fs::write(&app, "edited").unwrap();
        let report = renderer.render(&fetch).await;
        assert_eq!((report.written, report.unchanged), (0, 2));
        assert_eq!(fs::read_to_string(&app).unwrap(), "edited");

        // A value changed: only the file that uses it is written.
        fetch.set_parameter("/app/pw", "SecureString", "rotated");
        let report = renderer.render(&fetch).await;
        assert_eq!((report.written, report.unchanged), (1, 1));
        assert!(fs::read_to_string(&app)
            .unwrap()
            .contains("password: rotated\n"));

        // A value that can no longer be read: reported, the file keeps its last content.
        fetch.parameters.retain(|(name, _, _)| name != "/app/host");
        let report = renderer.render(&fetch).await;
        assert_eq!(report.written, 0);
        assert_eq!(report.failures.len(), 1);
        let failure = &report.failures[0];
        assert!(failure.contains("app.yaml.tmpl ->"), "{failure}");
        assert!(failure.contains("{{resolve:ssm:/app/host}}"), "{failure}");
        assert!(
            !failure.contains("rotated") && !failure.contains("Endpoint"),
            "{failure}"
        );
        assert!(fs::read_to_string(&app)
            .unwrap()
            .contains("password: rotated\n"));
        assert!(leftovers(&out).is_empty());
    }

    #[tokio::test]
    async fn unreadable_or_malformed_templates_are_reported_once_and_not_written() {
        let scratch = Scratch::new("broken");
        let plan = plan(
            &scratch,
            &[
                ("missing.conf", ""),
                ("bad.conf", "x={{resolve:ssm:/a:latest}}"),
                ("unresolvable.conf", "x={{resolve:ssm:/nope}}"),
            ],
        );
        let fetch = FakeFetch::default();
        let mut renderer = Renderer::load(&plan);
        let report = renderer.render(&fetch).await;
        assert_eq!(report.written, 0);
        assert_eq!(report.failures.len(), 3, "{report:?}");
        assert!(report.failures[0].contains("could not read the template"));
        assert!(report.failures[1].contains("{{resolve:ssm:/a:latest}}"));
        assert!(report.failures[2].contains("parameter does not exist"));
        assert!(!scratch.0.join("out").exists());
        // Templates that could not be loaded are not reported again on each invoke.
        let report = renderer.render(&fetch).await;
        assert_eq!(report.failures.len(), 1);
    }
}
