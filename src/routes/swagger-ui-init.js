// Swagger UI on this gateway's own /openapi.json, which describes what this
// gateway does (security only when it has client keys).
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  displayRequestDuration: true,
  // Nothing is fetched from elsewhere: no validator badge from swagger.io.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
