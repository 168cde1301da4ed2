-- Per-street department instances (徐家汇街道城管中队 of the kind 城管执法中队): the units serving a
-- case's place, parallel to its departments (kinds). Rows written before this migration have none:
-- queries fall back to the kinds (if(length(units) = length(departments), units, departments)).
ALTER TABLE cases ADD COLUMN units Array(String);
ALTER TABLE dispatches ADD COLUMN units Array(String);
ALTER TABLE dispatches ADD COLUMN primary_unit String;
