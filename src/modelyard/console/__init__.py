"""The web console: server-rendered page shells (Jinja2) whose data comes from the public JSON API.

Each page is a template in `templates/pages/` plus, where it needs one, a script in `static/pages/`. The server
renders the layout, the navigation and who is signed in; everything else a page shows it fetches from the same
JSON API a program calls, with the session cookie and the CSRF header (`static/console.js`), so the console has
no private data path. See docs/console.md.
"""
