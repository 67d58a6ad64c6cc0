{
  # A development shell with what Phlo's Makefile expects. nixpkgs cannot be fetched on the
  # build machines (no internet), so there `make` alone sets things up; elsewhere `nix develop`
  # gives the same tools pinned.
  description = "Phlo: a data lakehouse platform on Dagster, dbt and DuckLake";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.python311
            pkgs.uv
            pkgs.gnumake
            pkgs.postgresql_15
            pkgs.duckdb
            pkgs.ruff
          ];
          env = {
            UV_PYTHON_DOWNLOADS = "never";
            UV_PYTHON = "${pkgs.python311}/bin/python3.11";
          };
          shellHook = ''
            export PHLO_HOME="$PWD/.phlo"
            export DAGSTER_HOME="$PHLO_HOME/dagster"
            echo "phlo dev shell: make demo | make test"
          '';
        };
      });
    };
}
