//! `hutch cp SRC DST`: copies one file into or out of a sandbox, streamed,
//! with a progress bar for large files. `ID:/path` names a sandbox file; `-`
//! is standard input or output.

use std::path::PathBuf;

use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use super::{Api, CliError, Global, client::q};

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a local path, `-`, or `SANDBOX_ID:/path`.
    pub src: String,
    /// Destination: a local path, `-`, or `SANDBOX_ID:/path`.
    pub dst: String,
}

/// Files at least this large get a progress bar (on a terminal).
const PROGRESS_FROM: u64 = 8 << 20;

#[derive(Debug, PartialEq, Eq)]
enum Place {
    Local(PathBuf),
    Std,
    Sandbox { id: String, path: String },
}

fn parse_place(s: &str) -> Place {
    if s == "-" {
        return Place::Std;
    }
    // `ID:/abs/path`: an ID is lowercase letters and digits only, so a local
    // path such as `./a:b` or `/x:y` is never taken for one.
    if let Some((id, path)) = s.split_once(':')
        && !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && path.starts_with('/')
    {
        return Place::Sandbox {
            id: id.to_owned(),
            path: path.to_owned(),
        };
    }
    Place::Local(PathBuf::from(s))
}

fn bar(len: Option<u64>) -> ProgressBar {
    use std::io::IsTerminal;
    match len {
        Some(n) if n >= PROGRESS_FROM && std::io::stderr().is_terminal() => {
            let pb = ProgressBar::new(n);
            pb.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb
        }
        _ => ProgressBar::hidden(),
    }
}

pub async fn run(api: &Api, _g: &Global, a: CpArgs) -> Result<i32, CliError> {
    match (parse_place(&a.src), parse_place(&a.dst)) {
        (Place::Sandbox { id, path }, local @ (Place::Local(_) | Place::Std)) => {
            let resp = api
                .send(api.request(
                    Method::GET,
                    &format!("/v1/sandboxes/{}/files?path={}", q(&id), q(&path)),
                ))
                .await?;
            let pb = bar(resp.content_length());
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match &local {
                Place::Local(p) => Box::new(
                    tokio::fs::File::create(p)
                        .await
                        .map_err(|e| CliError::io(format!("creating {}", p.display()), e))?,
                ),
                _ => Box::new(tokio::io::stdout()),
            };
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| CliError::Protocol(format!("download broke: {e}")))?;
                out.write_all(&chunk)
                    .await
                    .map_err(|e| CliError::io("writing", e))?;
                pb.inc(chunk.len() as u64);
            }
            out.flush().await.map_err(|e| CliError::io("writing", e))?;
            pb.finish_and_clear();
            Ok(0)
        }
        (local @ (Place::Local(_) | Place::Std), Place::Sandbox { id, path }) => {
            let (reader, len): (
                Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>,
                Option<u64>,
            ) = match &local {
                Place::Local(p) => {
                    let f = tokio::fs::File::open(p)
                        .await
                        .map_err(|e| CliError::io(format!("opening {}", p.display()), e))?;
                    let len = f.metadata().await.ok().map(|m| m.len());
                    (Box::new(f), len)
                }
                _ => (Box::new(tokio::io::stdin()), None),
            };
            let pb = bar(len);
            let pb2 = pb.clone();
            let stream =
                tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10).inspect(move |c| {
                    if let Ok(c) = c {
                        pb2.inc(c.len() as u64);
                    }
                });
            let req = api
                .request(
                    Method::PUT,
                    &format!("/v1/sandboxes/{}/files?path={}", q(&id), q(&path)),
                )
                .header("content-type", "application/octet-stream")
                .body(reqwest::Body::wrap_stream(stream));
            api.send(req).await?;
            pb.finish_and_clear();
            Ok(0)
        }
        (Place::Sandbox { .. }, Place::Sandbox { .. }) => Err(CliError::Usage(
            "copying between two sandboxes is not supported; copy through a local file".into(),
        )),
        _ => Err(CliError::Usage(
            "one side of `hutch cp` must be SANDBOX_ID:/path".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places() {
        assert_eq!(parse_place("-"), Place::Std);
        assert_eq!(
            parse_place("sbabc123:/tmp/x"),
            Place::Sandbox {
                id: "sbabc123".into(),
                path: "/tmp/x".into()
            }
        );
        assert_eq!(parse_place("./a:b"), Place::Local("./a:b".into()));
        assert_eq!(parse_place("/x:/y"), Place::Local("/x:/y".into()));
        assert_eq!(parse_place("Sb1:/y"), Place::Local("Sb1:/y".into()));
        assert_eq!(parse_place("sb1:rel"), Place::Local("sb1:rel".into()));
    }
}
