//! `plenary egress`: a WHEP client of the SFU's programme feed that turns it into a
//! broadcast (fixed-format H.264 with the screen share and the speaker, and one mixed AAC
//! track) pushed over RTMP(S) and SRT, and written as HLS and MP4. See README.md and docs/decisions/0005-egress.md.

pub mod args;
mod avprobe;
pub mod backoff;
mod fanout;
pub mod layout;
mod metrics_desc;
mod mixer;
mod output;
mod pull;
mod reports;
pub mod run;
pub mod source;
mod start;
pub mod status;
pub mod target;
pub mod timeline;
pub mod whep;

pub use args::EgressArgs;
pub use run::{exit, run};
