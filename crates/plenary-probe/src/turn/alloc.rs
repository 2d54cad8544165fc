//! Setting up one allocation, then serving it: the thin async shell around
//! [`TurnClient`]. After setup the allocation's task reads everything the server sends on
//! its connection (echoed data, refresh answers), runs the refresh timers, and releases
//! the allocation when told to stop.

use super::args::Transport;
use super::client::{ClientConfig, Event, Input, Phase, TurnClient};
use super::conn::{Conn, FrameReader};
use super::payload::Stamp;
use super::shared::{Counters, Shared};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout};

/// How long the release (Refresh lifetime 0) may take at the end of a run.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Everything the allocations of one run have in common.
pub struct SetupContext {
    pub transport: Transport,
    pub server: SocketAddr,
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    pub timeout: Duration,
}

/// A ready allocation, handed from setup to its serving task and the pacer.
pub struct Ready {
    pub id: u32,
    pub conn: Arc<Conn>,
    pub reader: FrameReader,
    pub client: TurnClient,
    /// First request to Allocate success.
    pub alloc_ms: f64,
    /// First request to permission/channel in place.
    pub setup_ms: f64,
}

#[derive(Debug)]
pub struct SetupFailed {
    pub id: u32,
    /// Grouping key for the report: "connect", "timeout", "401", "486"...
    pub label: String,
    pub message: String,
}

fn failed(id: u32, label: &str, message: impl ToString) -> SetupFailed {
    SetupFailed {
        id,
        label: label.to_string(),
        message: message.to_string(),
    }
}

/// Connects and runs the client to `Ready`. Bounded: the connect has `ctx.timeout`, and
/// every transaction gives up after it too.
pub async fn setup(id: u32, ctx: &SetupContext, cfg: ClientConfig) -> Result<Ready, SetupFailed> {
    let t0 = Instant::now();
    let connect = Conn::connect(ctx.transport, ctx.server, ctx.tls.clone());
    let (conn, mut reader) = match timeout(ctx.timeout, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(failed(id, "connect", format!("connect: {e}"))),
        Err(_) => return Err(failed(id, "connect", "connect timed out")),
    };
    let mut client = TurnClient::new(cfg, Instant::now());
    let mut alloc_ms = None;
    let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
    // Every iteration either finishes or waits for input or a client deadline, and the
    // client gives up after a bounded number of deadlines.
    loop {
        while let Some(frame) = client.poll_transmit() {
            if let Err(e) = timeout(ctx.timeout, conn.send(frame))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("send timed out")))
            {
                return Err(failed(id, "connect", format!("send: {e}")));
            }
        }
        while let Some(event) = client.poll_event() {
            match event {
                Event::Allocated { .. } => alloc_ms = Some(ms(Instant::now())),
                Event::Ready => {
                    let now = Instant::now();
                    return Ok(Ready {
                        id,
                        conn,
                        reader,
                        client,
                        alloc_ms: alloc_ms.unwrap_or_else(|| ms(now)),
                        setup_ms: ms(now),
                    });
                }
                Event::Failed(f) => return Err(failed(id, &f.label(), f)),
                _ => {}
            }
        }
        let deadline = client
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + ctx.timeout);
        tokio::select! {
            r = reader.next() => match r {
                Ok(range) => {
                    client.handle_input(Instant::now(), reader.frame(range));
                }
                Err(e) => return Err(failed(id, "connect", format!("connection: {e}"))),
            },
            _ = sleep_until(deadline.into()) => client.handle_timeout(Instant::now()),
        }
    }
}

/// Serves a ready allocation until `stop`, then releases it.
pub async fn serve(
    mut reader: FrameReader,
    conn: Arc<Conn>,
    mut client: TurnClient,
    id: u32,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let c = &shared.counters;
    // Stands for "no deadline"; the run's own budget ends long before.
    let far = Instant::now() + Duration::from_secs(30 * 86_400);
    // One timer for the task's life, moved only when the client's deadline moves, so a
    // received packet does not cost a timer registration.
    let timer = sleep_until(far.into());
    tokio::pin!(timer);
    loop {
        if !flush(&conn, &mut client, c).await {
            return;
        }
        let deadline = client.poll_timeout().unwrap_or(far).into();
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            r = reader.next() => {
                let Ok(range) = r else {
                    Counters::add(&c.broken, 1);
                    return;
                };
                let now = Instant::now();
                if let Input::Data(data) = client.handle_input(now, reader.frame(range)) {
                    on_data(&shared, id, data, now);
                }
            }
            _ = &mut timer => client.handle_timeout(Instant::now()),
            _ = stop.changed() => break,
        }
    }
    // Release; bounded by CLOSE_WAIT whatever the server does.
    client.close(Instant::now());
    let _ = timeout(CLOSE_WAIT, async {
        while client.phase() != Phase::Closed {
            if !flush(&conn, &mut client, c).await {
                return;
            }
            let deadline = client.poll_timeout().unwrap_or(far);
            tokio::select! {
                r = reader.next() => match r {
                    Ok(range) => {
                        client.handle_input(Instant::now(), reader.frame(range));
                    }
                    Err(_) => return,
                },
                _ = sleep_until(deadline.into()) => client.handle_timeout(Instant::now()),
            }
        }
    })
    .await;
}

/// Sends what the client queued and counts refresh failures. False if the connection
/// is gone.
async fn flush(conn: &Conn, client: &mut TurnClient, c: &Counters) -> bool {
    while let Some(frame) = client.poll_transmit() {
        if conn.send(frame).await.is_err() {
            Counters::add(&c.broken, 1);
            return false;
        }
    }
    while let Some(event) = client.poll_event() {
        if let Event::RefreshFailed(_) = event {
            Counters::add(&c.refresh_failures, 1);
        }
    }
    true
}

fn on_data(shared: &Shared, id: u32, data: &[u8], now: Instant) {
    let Some(stamp) = Stamp::read(data) else {
        return;
    };
    if stamp.flow != id {
        Counters::add(&shared.counters.misrouted, 1);
        return;
    }
    if let Some(mut flow) = shared.flow(id) {
        flow.on_back(stamp.epoch, stamp.seq, stamp.sent_us, shared.us_at(now));
    }
    Counters::add(&shared.counters.back, 1);
}
