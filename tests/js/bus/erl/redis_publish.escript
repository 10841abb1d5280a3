#!/usr/bin/env escript
%% Publishes one Erlang term on a Redis channel the way phoenix_pubsub_redis's RedisServer does:
%% PUBLISH <channel> term_to_binary(Term, [{compressed, Level}]), over a plain TCP connection
%% speaking RESP by hand (erlang-base has no Redis client).
%%
%%   escript redis_publish.escript PORT CHANNEL TERM_TEXT COMPRESSION_LEVEL
%%
%% TERM_TEXT is an Erlang expression (without the final dot). Prints the number of receivers
%% Redis reports.
main([Port, Channel, TermText, Level]) ->
    {ok, Tokens, _} = erl_scan:string(TermText ++ "."),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    {value, Term, _} = erl_eval:exprs(Exprs, []),
    Bin = term_to_binary(Term, [{compressed, list_to_integer(Level)}]),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, list_to_integer(Port), [binary, {active, false}], 5000),
    ok = gen_tcp:send(S, resp([<<"PUBLISH">>, list_to_binary(Channel), Bin])),
    {ok, <<":", Reply/binary>>} = gen_tcp:recv(S, 0, 5000),
    [Receivers | _] = binary:split(Reply, <<"\r\n">>),
    io:format("~s~n", [Receivers]),
    gen_tcp:close(S).

resp(Args) ->
    [io_lib:format("*~b\r\n", [length(Args)]) |
     [[io_lib:format("$~b\r\n", [byte_size(A)]), A, <<"\r\n">>] || A <- Args]].
