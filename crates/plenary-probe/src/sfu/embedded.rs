//! `--embedded`: a Plenary SFU in this process, its threads pinned to their own CPUs so the
//! probe on the other CPUs measures it as it would a separate server. Its threads are all
//! named `plenary-sfu*`, which is how its CPU is told apart from the probe's.

use super::engine::load;

pub struct Embedded {
    pub runtime: tokio::runtime::Runtime,
    pub sfu: Option<plenary_sfu::RunningSfu>,
}

impl Embedded {
    /// Starts the SFU from `base` on `bind` (ports chosen by the kernel), pinned to `cpus`
    /// if given.
    pub fn start(
        bind: std::net::IpAddr,
        cpus: Option<&[usize]>,
        base: plenary_sfu::SfuConfig,
    ) -> anyhow::Result<Embedded> {
        let pin = cpus.map(<[usize]>::to_vec);
        let pin_media = pin.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("plenary-sfu-http")
            .on_thread_start(move || {
                if let Some(cpus) = &pin {
                    let _ = load::pin(0, cpus);
                }
            })
            .enable_all()
            .build()?;
        let any = std::net::SocketAddr::new(bind, 0);
        let config = plenary_sfu::SfuConfig {
            http: any,
            media: any,
            pin_cpus: pin_media,
            ..base
        };
        let sfu = runtime.block_on(async { tokio::spawn(plenary_sfu::serve(config)).await })??;
        Ok(Embedded {
            runtime,
            sfu: Some(sfu),
        })
    }

    pub fn base_url(&self) -> String {
        self.sfu
            .as_ref()
            .map_or(String::new(), |s| format!("http://{}", s.http_addr()))
    }

    pub fn stop(mut self) {
        if let Some(sfu) = self.sfu.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(3), sfu.shutdown()).await
            });
        }
        self.runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
    }
}
