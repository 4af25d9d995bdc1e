//! The bench's ceiling: hyper's HTTP/1 server on tokio, like the extension, with no router
//! and no middleware: every request on a kept-alive connection is answered with the same
//! JSON body. Nothing else is done per request, so the bench's ratio is lockbox's own work.
//!
//! `lockbox-ceiling BODY [one|all]` prints its port on the first line of stdout, then serves
//! on 127.0.0.1 until it is killed. `one` (the default) runs one runtime thread, as the
//! extension does (`extension/src/main.rs`); `all` runs tokio's multi-thread runtime, one
//! worker per CPU, to show what more threads would buy on this machine.
#![allow(
    clippy::print_stdout,
    reason = "the port goes to the bench through stdout"
)]

use std::convert::Infallible;
use std::net::Ipv4Addr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let body = Bytes::from(args.next().unwrap_or_default());
    let mut runtime = match args.next().as_deref() {
        None | Some("one") => tokio::runtime::Builder::new_current_thread(),
        Some("all") => tokio::runtime::Builder::new_multi_thread(),
        Some(other) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("threads must be `one` or `all`, not {other:?}"),
            ))
        }
    };
    runtime.enable_all().build()?.block_on(serve(body))
}

async fn serve(body: Bytes) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let service = service_fn(move |_request| {
            let mut response = Response::new(Full::new(body.clone()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
