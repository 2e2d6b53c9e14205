"""Catalog service: parks, attractions, products, prices and the holiday calendar."""

from __future__ import annotations

import grpc

from parkgate.server.domain.errors import InvalidArgument
from parkgate.server.domain.sales import check_quantity
from parkgate.server.services.catalog import CatalogService
from parkgate.v1 import catalog_pb2, catalog_pb2_grpc

from .. import convert
from ..call import principal

Ctx = grpc.aio.ServicerContext


class CatalogServicer(catalog_pb2_grpc.CatalogServicer):
    def __init__(self, catalog: CatalogService) -> None:
        self.catalog = catalog

    async def ListParks(self, request: catalog_pb2.ListParksRequest, context: Ctx) -> catalog_pb2.ListParksResponse:
        rows = await self.catalog.list_parks(request.include_disabled)
        return catalog_pb2.ListParksResponse(parks=[convert.park(r) for r in rows])

    async def PutPark(self, request: catalog_pb2.PutParkRequest, context: Ctx) -> catalog_pb2.Park:
        return convert.park(await self.catalog.put_park(convert.park_spec(request.park)))

    async def ListAttractions(
        self, request: catalog_pb2.ListAttractionsRequest, context: Ctx
    ) -> catalog_pb2.ListAttractionsResponse:
        rows = await self.catalog.list_attractions(request.park_id)
        return catalog_pb2.ListAttractionsResponse(attractions=[convert.attraction(r) for r in rows])

    async def PutAttraction(self, request: catalog_pb2.PutAttractionRequest, context: Ctx) -> catalog_pb2.Attraction:
        row = await self.catalog.put_attraction(convert.attraction_spec(request.attraction))
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

    async def SetPrice(self, request: catalog_pb2.SetPriceRequest, context: Ctx) -> catalog_pb2.PriceEntry:
        e = request.entry
        row = await self.catalog.set_price(e.product_id, convert.day_type_name(e.day_type), e.peak_name,
                                           e.price.minor_units, principal().username)
        return convert.price_entry(row)

    async def SetAttractionFare(self, request: catalog_pb2.AttractionFare, context: Ctx) -> catalog_pb2.AttractionFare:
        day_type = convert.day_type_name(request.day_type)
        amount = await self.catalog.set_fare(request.attraction_id, day_type, request.price.minor_units)
        return catalog_pb2.AttractionFare(attraction_id=request.attraction_id, day_type=request.day_type,
                                          price=convert.money(amount, request.price.currency))

    async def QuotePrice(self, request: catalog_pb2.QuotePriceRequest, context: Ctx) -> catalog_pb2.QuotePriceResponse:
        day = convert.date_from(request.date, "date")
        if day is None:
            raise InvalidArgument("name the date to quote")
        quantity = request.quantity or 1
        check_quantity(quantity)
        product, quote = await self.catalog.quote(request.product_id, day)
        currency = product.currency
        return catalog_pb2.QuotePriceResponse(
            unit_price=convert.money(quote.unit_price, currency), total=convert.money(quote.total(quantity), currency),
            day_type=convert.day_type(quote.day.day_type), peak_name=quote.day.peak_name,
            product_version=product.version,
        )

    async def ListHolidays(self, request: catalog_pb2.ListHolidaysRequest, context: Ctx) -> catalog_pb2.ListHolidaysResponse:
        rows = await self.catalog.list_holidays(request.park_id, convert.date_from(getattr(request, "from"), "from"),
                                                convert.date_from(request.until, "until"))
        return catalog_pb2.ListHolidaysResponse(holidays=[convert.holiday(r) for r in rows])

    async def PutHoliday(self, request: catalog_pb2.PutHolidayRequest, context: Ctx) -> catalog_pb2.Holiday:
        h = request.holiday
        day = convert.date_from(h.date)
        if day is None:
            raise InvalidArgument("a calendar day needs its date")
        return convert.holiday(await self.catalog.put_holiday(h.park_id, day, convert.day_type_name(h.day_type), h.name))

    async def DeleteHoliday(
        self, request: catalog_pb2.DeleteHolidayRequest, context: Ctx
    ) -> catalog_pb2.DeleteHolidayResponse:
        day = convert.date_from(request.date)
        if day is None:
            raise InvalidArgument("name the date to remove from the calendar")
        await self.catalog.delete_holiday(request.park_id, day)
        return catalog_pb2.DeleteHolidayResponse()
