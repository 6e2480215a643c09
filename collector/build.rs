//! Rebuild when a migration is added: `sqlx::migrate!` embeds `sql/` (PostgreSQL) and
//! `sqlite/` at compile time, and cargo does not watch those folders by itself.
fn main() {
    println!("cargo:rerun-if-changed=../sql");
    println!("cargo:rerun-if-changed=sqlite");
}
