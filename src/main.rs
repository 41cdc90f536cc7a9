use std::process::ExitCode;

use clap::Parser;
use sandboxed_containers_operator::cli::{Cli, Command};
use sandboxed_containers_operator::{crdgen, packaging, render, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crdgen::kataconfig_crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Render(args) => {
            match render::render(&args.file, args.nodes.as_deref(), args.backend.into()) {
                Ok(rendered) => {
                    for note in &rendered.notes {
                        eprintln!("{note}");
                    }
                    print!("{}", rendered.yaml);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Bundle { output } => match packaging::write_all(&output) {
            Ok(paths) => {
                for path in paths {
                    println!("wrote {}", output.join(path).display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Run(args) => {
            // One crypto provider for every TLS stack in the process (kube client, servers).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!(
                        "error: {}: cannot start the async runtime: {e}",
                        run::Failure::Startup
                    );
                    return ExitCode::from(run::Failure::Startup.exit_code());
                }
            };
            // 0 after a shutdown signal; otherwise the failure's class (README "run" section):
            // 1 a part failed while running, 2 invalid configuration, 3 cannot start.
            match runtime.block_on(run::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let failure = run::Failure::of(&e);
                    eprintln!("error: {e:#}");
                    ExitCode::from(failure.exit_code())
                }
            }
        }
    }
}
