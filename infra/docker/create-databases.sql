-- Dagster's storage and the published marts beside the lake's catalog (POSTGRES_DB).
create database phlo_dagster owner phlo;
create database phlo_analytics owner phlo;
