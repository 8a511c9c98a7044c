fn main() {
    let path = std::env::args().nth(1).unwrap();
    match spawn_policy::load_agent(std::path::Path::new(&path)) {
        Ok(a) => println!("OK {a:#?}"),
        Err(e) => println!("ERR {e}"),
    }
}
