//! `plenary cred`: TURN REST credentials, as BigBlueButton computes them, and SFU room
//! tokens (`--room`), for scripts and tests.

use clap::Args;
use plenary_turn::stun::integrity::rest_password;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Args)]
pub struct CredArgs {
    /// Shared secret (coturn `static-auth-secret`; with --room, one of the SFU's
    /// [rooms] token-secrets). Also read from PLENARY_TURN_SECRET.
    #[arg(long, env = "PLENARY_TURN_SECRET", hide_env_values = true)]
    secret: String,
    /// Print a room token for `plenary sfu` instead (WHIP/WHEP `?token=` or
    /// `Authorization: Bearer`, room API `?token=`); --user becomes the display name.
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    /// User id appended to the expiry (`EXPIRY:USER`); without it the username is the bare
    /// expiry, which BBB also accepts.
    #[arg(long)]
    user: Option<String>,
    /// Seconds from now until the credential expires.
    #[arg(long, default_value_t = 86400)]
    ttl: u64,
    /// Separator between expiry and user (coturn `rest-api-separator`).
    #[arg(long, default_value_t = ':')]
    separator: char,
    /// Print JSON (`{"username":..,"password":..,"ttl":..}`) instead of two lines.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CredArgs) -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let expiry = now.saturating_add(args.ttl);
    if let Some(room) = args.room {
        let claims = plenary_sfu::token::Claims {
            room,
            exp: expiry,
            name: args.user,
        };
        println!("{}", plenary_sfu::token::issue(&args.secret, &claims));
        return Ok(());
    }
    let username = match &args.user {
        Some(user) => format!("{expiry}{}{user}", args.separator),
        None => expiry.to_string(),
    };
    let password = rest_password(args.secret.as_bytes(), &username);
    if args.json {
        println!(
            "{{\"username\":{},\"password\":{},\"ttl\":{}}}",
            json_string(&username),
            json_string(&password),
            args.ttl
        );
    } else {
        println!("{username}\n{password}");
    }
    Ok(())
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
