"""API tokens and roles of the operations service (issue 14, item 3; seed step 2 as
operators reach it over the network): bearer tokens stored only as hashes, each with
a role (viewer, operator, admin). See :mod:`skybatch.auth.tokens`."""
