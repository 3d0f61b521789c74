"""The web console: sign-in, sessions and the static pages, served by the gateway on the same origin."""
