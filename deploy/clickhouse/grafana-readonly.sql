-- A read-only ClickHouse user for Grafana on servers with SQL-driven access control (20.5 and
-- later; 18.16-era servers: users.d/citygrid-grafana.xml). Run as an administrator, after
-- replacing CHANGE_ME and the host restriction. docs/security.md.
CREATE SETTINGS PROFILE IF NOT EXISTS citygrid_readonly
    SETTINGS readonly = 2 CONST,
             max_execution_time = 60 MAX 120,
             max_memory_usage = 2000000000 MAX 2000000000,
             max_result_rows = 1000000;
CREATE USER IF NOT EXISTS citygrid_grafana
    IDENTIFIED WITH sha256_password BY 'CHANGE_ME'
    HOST IP '127.0.0.1'
    SETTINGS PROFILE 'citygrid_readonly';
GRANT SELECT ON citygrid.* TO citygrid_grafana;
