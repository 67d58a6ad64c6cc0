{
  # Phlo's development shell and the `phlo` CLI as a package.
  #
  # `nix develop` gives what the Makefile, the tests and the Pants bootstrap use: Python 3.11
  # (the code), Python 3.9 (Pants 2.17 itself), uv, make, PostgreSQL 15 and SeaweedFS (the
  # integration tests' servers), ruff. `nix build` (or `nix run . -- --help`) builds the CLI
  # from uv.lock through uv2nix, the same locked versions `make` installs: no second list.
  #
  # The build machines here cannot fetch nixpkgs (no internet but the package registries), so
  # this file is checked here only for syntax (`nix-instantiate --parse flake.nix`); `make` sets
  # up the same environment without Nix.
  description = "Phlo: a data lakehouse platform on Dagster, dbt and DuckLake";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
    pyproject-nix = {
      url = "github:pyproject-nix/pyproject.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    uv2nix = {
      url = "github:pyproject-nix/uv2nix";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    pyproject-build-systems = {
      url = "github:pyproject-nix/build-system-pkgs";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.uv2nix.follows = "uv2nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, pyproject-nix, uv2nix, pyproject-build-systems }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The project and every locked dependency, from pyproject.toml and uv.lock.
      workspace = uv2nix.lib.workspace.loadWorkspace { workspaceRoot = ./.; };
      overlay = workspace.mkPyprojectOverlay { sourcePreference = "wheel"; };
      pythonSet = pkgs:
        (pkgs.callPackage pyproject-nix.build.packages { python = pkgs.python311; }).overrideScope
          (nixpkgs.lib.composeManyExtensions [ pyproject-build-systems.overlays.default overlay ]);
    in
    {
      packages = forAll (pkgs: {
        # A virtual environment holding phlo and its locked dependencies; bin/phlo is the CLI.
        default = (pythonSet pkgs).mkVirtualEnv "phlo" workspace.deps.default;
      });

      apps = forAll (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/phlo";
        };
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.python311
            pkgs.python39 # runs Pants 2.17 (./pants finds it on PATH)
            pkgs.uv
            pkgs.gnumake
            pkgs.git
            pkgs.postgresql_15
            pkgs.seaweedfs
            pkgs.ruff
            pkgs.cacert
          ];
          env = {
            UV_PYTHON_DOWNLOADS = "never";
            UV_PYTHON = "${pkgs.python311}/bin/python3.11";
            PYTHON = "${pkgs.python311}/bin/python3.11";
            UV = "${pkgs.uv}/bin/uv"; # the Makefile's uv (else it pip-installs its pinned one)
          };
          shellHook = ''
            export PHLO_HOME="$PWD/.phlo"
            export DAGSTER_HOME="$PHLO_HOME/dagster"
            echo "phlo dev shell: make demo | make test | ./pants package ::"
          '';
        };
      });
    };
}
