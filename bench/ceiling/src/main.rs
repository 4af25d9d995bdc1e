//! The bench's ceiling: axum on hyper and tokio, like the extension, with one route
//! answering a fixed JSON body; nothing else per request.
//!
//! `lockbox-ceiling BODY` prints its port on the first line of stdout, then serves
//! `GET /systemsmanager/parameters/get` on 127.0.0.1 until it is killed.
#![allow(
    clippy::print_stdout,
    reason = "the port goes to the bench through stdout"
)]

use std::net::Ipv4Addr;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

fn main() -> std::io::Result<()> {
    let body: &'static str = Box::leak(std::env::args().nth(1).unwrap_or_default().into());
    // One runtime thread, as the extension runs: the ratio then measures lockbox's own work
    // per request, not a difference in threads.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let app = axum::Router::new().route(
                "/systemsmanager/parameters/get",
                get(move || async move { ([(CONTENT_TYPE, "application/json")], body) }),
            );
            let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            println!("{}", listener.local_addr()?.port());
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await
        })
}
