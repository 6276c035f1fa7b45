"""The web: the tenant console (/console/) and the operator dashboards (/operator/)."""
