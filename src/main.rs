//! `cxr-triage`: parse the command line, set up logging, and hand over to the library.

fn main() -> std::process::ExitCode {
    cxr_triage::cli::main()
}
