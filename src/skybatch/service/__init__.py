"""The operations service (issue 14, item 2; seed steps 2-3 and 11-16 as operators see
them over HTTP): a FastAPI app built by :func:`skybatch.service.app.create_app`, its
routers over the read layer (:mod:`skybatch.read`) and the campaign actions
(:mod:`skybatch.campaign.actions`), bearer tokens with roles (:mod:`skybatch.auth`).
``skybatch serve`` runs it with uvicorn."""
