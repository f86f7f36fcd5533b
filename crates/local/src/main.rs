//! The `kdp` command line: `kdp run`, `kdp status`, `kdp hello`.
//!
//! Arguments are parsed by hand: three subcommands with four flags do not justify clap's
//! dependency tree and build time, and a hand parser keeps `kdp hello` (a replica's cold
//! start) as small as possible. Bad usage and refused manifests exit with 64 (`EX_USAGE`),
//! like the other kdp binaries' bad configuration.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use kdp_core::ErrorChain;
use kdp_local::hello::HelloConfig;
use kdp_local::status::{STATUS_PATH, StatusReport, render};
use kdp_local::watch::DEFAULT_INTERVAL;
use kdp_local::{Loader, Model, Options, Reload, Watcher};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

const USAGE: &str = "\
kdp: Knative Services on one machine

Usage:
  kdp run [--listen ADDR] [--domain DOMAIN] PATH...
      Serve the Knative Services in PATH (YAML files or folders of them).
      --listen ADDR    where the router listens (default 127.0.0.1:8080)
      --domain DOMAIN  domain of the Services' URLs (overrides config-domain)
  kdp status [-o json] [--server ADDR]
      Describe the Services of a running `kdp run` (default server 127.0.0.1:8080).
  kdp hello
      The bundled hello-world app: answers `Hello $TARGET!` on 127.0.0.1:$PORT.
  kdp --help | --version
";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Cli {
    Run {
        listen: SocketAddr,
        domain: Option<String>,
        paths: Vec<PathBuf>,
    },
    Status {
        json: bool,
        server: SocketAddr,
    },
    Hello,
    Help,
    Version,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = match parse(&args) {
        Ok(cli) => cli,
        Err(err) => {
            line_err(&format!("kdp: {err}\n\n{USAGE}"));
            return ExitCode::from(EX_USAGE);
        }
    };
    match cli {
        Cli::Help => {
            line_out(USAGE.trim_end());
            return ExitCode::SUCCESS;
        }
        Cli::Version => {
            line_out(concat!("kdp ", env!("CARGO_PKG_VERSION")));
            return ExitCode::SUCCESS;
        }
        Cli::Run { .. } | Cli::Status { .. } | Cli::Hello => {}
    }
    // The hello app is a replica: keep it on one thread and quiet.
    let runtime = if cli == Cli::Hello {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        // Lifecycle lines at info; the proxies' own logs only when degraded.
        kdp_core::log::init_pretty("info,kdp_proxy=warn,kdp_queue_proxy=warn");
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => {
            line_err(&format!("kdp: cannot start the runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli {
            Cli::Run {
                listen,
                domain,
                paths,
            } => run(listen, domain, paths).await,
            Cli::Status { json, server } => status(json, server).await.map(|()| ExitCode::SUCCESS),
            Cli::Hello => hello().await.map(|()| ExitCode::SUCCESS),
            Cli::Help | Cli::Version => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            line_err(&format!("kdp: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

use kdp_core::env::EX_USAGE;

fn parse(args: &[String]) -> anyhow::Result<Cli> {
    let mut it = args.iter().map(String::as_str);
    let Some(command) = it.next() else {
        bail!("missing command");
    };
    let value = |it: &mut dyn Iterator<Item = &str>, flag: &str| -> anyhow::Result<String> {
        it.next()
            .map(str::to_owned)
            .with_context(|| format!("{flag} needs a value"))
    };
    let addr = |s: &str, flag: &str| -> anyhow::Result<SocketAddr> {
        s.parse()
            .with_context(|| format!("{flag} {s:?}: expected an address like 127.0.0.1:8080"))
    };
    match command {
        "-h" | "--help" | "help" => Ok(Cli::Help),
        "-V" | "--version" | "version" => Ok(Cli::Version),
        "hello" => match it.next() {
            None => Ok(Cli::Hello),
            Some(extra) => bail!("kdp hello takes no arguments, got {extra:?}"),
        },
        "run" => {
            let mut listen = addr(DEFAULT_LISTEN, "--listen")?;
            let mut domain = None;
            let mut paths = Vec::new();
            while let Some(arg) = it.next() {
                match split_flag(arg) {
                    ("--listen", inline) => {
                        let v = inline.map_or_else(|| value(&mut it, "--listen"), Ok)?;
                        listen = addr(&v, "--listen")?;
                    }
                    ("--domain", inline) => {
                        let v = inline.map_or_else(|| value(&mut it, "--domain"), Ok)?;
                        if v.is_empty() {
                            bail!("--domain needs a value");
                        }
                        domain = Some(v);
                    }
                    (flag, _) if flag.starts_with('-') && flag.len() > 1 => {
                        bail!("kdp run: unknown flag {flag}")
                    }
                    _ => paths.push(PathBuf::from(arg)),
                }
            }
            if paths.is_empty() {
                bail!("kdp run needs at least one PATH (a YAML file or a folder)");
            }
            Ok(Cli::Run {
                listen,
                domain,
                paths,
            })
        }
        "status" => {
            let mut json = false;
            let mut server = addr(DEFAULT_LISTEN, "--server")?;
            while let Some(arg) = it.next() {
                match split_flag(arg) {
                    ("-o" | "--output", inline) => {
                        match inline.map_or_else(|| value(&mut it, "-o"), Ok)?.as_str() {
                            "json" => json = true,
                            "text" => json = false,
                            other => bail!("-o {other:?}: expected json or text"),
                        }
                    }
                    ("--server", inline) => {
                        let v = inline.map_or_else(|| value(&mut it, "--server"), Ok)?;
                        server = addr(&v, "--server")?;
                    }
                    (other, _) => bail!("kdp status: unexpected argument {other:?}"),
                }
            }
            Ok(Cli::Status { json, server })
        }
        other => bail!("unknown command {other:?}"),
    }
}

/// Splits `--flag=value` into the flag and its inline value.
fn split_flag(arg: &str) -> (&str, Option<String>) {
    match arg.split_once('=') {
        Some((flag, v)) if flag.starts_with("--") => (flag, Some(v.to_owned())),
        _ => (arg, None),
    }
}

/// `kdp run`: loads and validates the manifests, prints what they define, and follows edits.
///
/// The router, activator and queue-proxy cores and the KPA plug in here through the
/// [`Model`]s the watcher yields.
async fn run(
    listen: SocketAddr,
    domain: Option<String>,
    paths: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let self_exe = std::env::current_exe().context("cannot find our own executable")?;
    let loader = Loader::new(paths, Options { domain, self_exe });
    let mut watcher = Watcher::new(loader, DEFAULT_INTERVAL);
    let model = match watcher.load_now() {
        Reload::Applied { model, .. } => model,
        Reload::Rejected(err) => {
            line_err(&format!("kdp: {}", ErrorChain(&err)));
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    line_out(&describe(&model, listen));
    let (models, model_rx) = tokio::sync::watch::channel(model);
    let plane = kdp_local::plane::Plane::new(model_rx);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let plane = plane.clone();
        async move {
            plane
                .serve(listener, async {
                    let _ = stop_rx.await;
                })
                .await;
        }
    });
    let shutdown = kdp_core::signal::shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            reload = watcher.next() => match reload {
                Reload::Applied { changes, model } => {
                    for change in changes {
                        tracing::info!("{change}");
                    }
                    models.send_replace(model);
                }
                Reload::Rejected(err) => {
                    tracing::warn!("manifests refused, still serving the previous ones: {}", ErrorChain(&err));
                }
            },
            signal = &mut shutdown => {
                signal.context("cannot install signal handlers")?;
                tracing::info!("stopping: draining requests and stopping every replica");
                let _ = stop_tx.send(());
                let _ = serving.await;
                tracing::info!("stopped");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// What `kdp run` prints at start: each Service's URLs, revisions and routes.
fn describe(model: &Model, listen: SocketAddr) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for s in &model.services {
        let _ = writeln!(out, "Service {}/{}", s.key.namespace, s.key.name);
        let _ = writeln!(out, "  URL:      {}", s.url);
        let _ = writeln!(out, "  Cluster:  {}", s.cluster_url);
        let _ = writeln!(out, "  Revisions:");
        for key in s.revisions.iter().rev() {
            let latest = if *key == s.latest_created {
                " (latest created)"
            } else {
                ""
            };
            let cmd = model.revisions.get(key).map_or_else(String::new, |r| {
                std::iter::once(r.program.display().to_string())
                    .chain(r.args.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            let _ = writeln!(out, "    {}{latest}: {cmd}", key.name);
        }
        let _ = writeln!(out, "  Traffic:");
        for t in &s.traffic {
            let tag = t
                .tag
                .as_deref()
                .map_or_else(String::new, |tag| format!("  {}", s.tag_url(tag)));
            let latest = if t.latest_revision { " (latest)" } else { "" };
            let _ = writeln!(
                out,
                "    {:>3}% {}{latest}{tag}",
                t.percent, t.revision.name
            );
        }
    }
    if model.routes.tag_header_routing() {
        let _ = writeln!(out, "Tag-header routing: on (Knative-Serving-Tag)");
    }
    let first = model
        .services
        .first()
        .map_or("<service>.<namespace>.<domain>", |s| {
            s.url.trim_start_matches("http://")
        });
    let _ = write!(
        out,
        "Router address: http://{listen} (send Host: {first}); watching the files for changes"
    );
    out
}

/// `kdp status`: fetches the running `kdp run`'s report and prints it.
async fn status(json: bool, server: SocketAddr) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(server)
        .await
        .with_context(|| format!("no kdp run at {server}; start one with `kdp run PATH...`"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::get(STATUS_PATH)
        .header(http::header::HOST, server.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let code = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !code.is_success() {
        bail!("{server} answered {code} for {STATUS_PATH}; is it a kdp run?");
    }
    let report: StatusReport =
        serde_json::from_slice(&body).context("the status answer is not a kdp status report")?;
    if json {
        line_out(&serde_json::to_string_pretty(&report)?);
    } else {
        line_out(render(&report).trim_end());
    }
    Ok(())
}

/// `kdp hello`: the bundled hello-world app.
async fn hello() -> anyhow::Result<()> {
    let config = HelloConfig::from_env(|k| std::env::var(k).ok())?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    kdp_local::hello::serve(listener, &config.target, async {
        let _ = kdp_core::signal::shutdown().await;
    })
    .await?;
    Ok(())
}

fn line_out(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn line_err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_run() {
        assert_eq!(
            parse(&args("run a.yaml dir")).unwrap(),
            Cli::Run {
                listen: "127.0.0.1:8080".parse().unwrap(),
                domain: None,
                paths: vec!["a.yaml".into(), "dir".into()],
            }
        );
        assert_eq!(
            parse(&args("run --listen 0.0.0.0:9000 --domain=localhost a.yaml")).unwrap(),
            Cli::Run {
                listen: "0.0.0.0:9000".parse().unwrap(),
                domain: Some("localhost".into()),
                paths: vec!["a.yaml".into()],
            }
        );
        assert!(
            parse(&args("run"))
                .unwrap_err()
                .to_string()
                .contains("at least one PATH")
        );
        assert!(parse(&args("run --listen nope a.yaml")).is_err());
        assert!(
            parse(&args("run --bogus a.yaml"))
                .unwrap_err()
                .to_string()
                .contains("unknown flag --bogus")
        );
        assert!(
            parse(&args("run a.yaml --domain"))
                .unwrap_err()
                .to_string()
                .contains("--domain needs a value")
        );
    }

    #[test]
    fn parses_status_and_hello() {
        assert_eq!(
            parse(&args("status -o json --server 127.0.0.1:9")).unwrap(),
            Cli::Status {
                json: true,
                server: "127.0.0.1:9".parse().unwrap()
            }
        );
        assert_eq!(
            parse(&args("status")).unwrap(),
            Cli::Status {
                json: false,
                server: "127.0.0.1:8080".parse().unwrap()
            }
        );
        assert!(parse(&args("status -o yaml")).is_err());
        assert_eq!(parse(&args("hello")).unwrap(), Cli::Hello);
        assert!(parse(&args("hello x")).is_err());
        assert_eq!(parse(&args("--help")).unwrap(), Cli::Help);
        assert!(parse(&[]).is_err());
        assert!(parse(&args("deploy")).is_err());
    }
}
