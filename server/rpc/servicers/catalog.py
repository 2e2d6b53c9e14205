"""Catalog service: parks, attractions, products (prices and holidays come with sales)."""

from __future__ import annotations

import grpc

from parkgate.services.catalog import CatalogService
from parkgate.v1 import catalog_pb2, catalog_pb2_grpc

from .. import convert

Ctx = grpc.aio.ServicerContext


class CatalogServicer(catalog_pb2_grpc.CatalogServicer):
    def __init__(self, catalog: CatalogService) -> None:
        self.catalog = catalog

    async def ListParks(self, request: catalog_pb2.ListParksRequest, context: Ctx) -> catalog_pb2.ListParksResponse:
        rows = await self.catalog.list_parks(request.include_disabled)
        return catalog_pb2.ListParksResponse(parks=[convert.park(r) for r in rows])

    async def PutPark(self, request: catalog_pb2.PutParkRequest, context: Ctx) -> catalog_pb2.Park:
        return convert.park(await self.catalog.put_park(convert.park_row(request.park)))

    async def ListAttractions(
        self, request: catalog_pb2.ListAttractionsRequest, context: Ctx
    ) -> catalog_pb2.ListAttractionsResponse:
        rows = await self.catalog.list_attractions(request.park_id)
        return catalog_pb2.ListAttractionsResponse(attractions=[convert.attraction(r) for r in rows])

    async def PutAttraction(self, request: catalog_pb2.PutAttractionRequest, context: Ctx) -> catalog_pb2.Attraction:
        a = request.attraction
        row = await self.catalog.put_attraction(
            {"id": a.id, "park_id": a.park_id, "name": a.name,
             "stored_value_price": a.stored_value_price.minor_units, "disabled": a.disabled}
        )
        return convert.attraction(row)

    async def ListProducts(self, request: catalog_pb2.ListProductsRequest, context: Ctx) -> catalog_pb2.ListProductsResponse:
        rows = await self.catalog.list_products(request.park_id, request.include_off_sale)
        return catalog_pb2.ListProductsResponse(products=[convert.product(r) for r in rows])

    async def PutProduct(self, request: catalog_pb2.PutProductRequest, context: Ctx) -> catalog_pb2.Product:
        p = request.product
        row = await self.catalog.put_product(
            product_id=p.id, park_id=p.park_id, name=p.name, kind=convert.product_kind_name(p.kind),
            rules=convert.rules_to_dict(p.rules), on_sale=p.on_sale,
        )
        return convert.product(row)
