-- The report's modal day in its default window (the 14 days ending at the newest reading),
-- kept as a table: what the dashboards and the published marts read.
select * from {{ ref('mrt_glucose_report_profile') }}
