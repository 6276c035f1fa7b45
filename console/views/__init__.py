"""The console's pages: tenant pages by resource, the operator dashboards, the sign-in."""
